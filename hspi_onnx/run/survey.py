"""The survey: every available CPU platform on the zoo, run twice in fresh processes.

Each pass has a runner of its own, so every platform runs in a fresh worker process of its
runtime family. Platforms whose outputs are bit-identical form equivalence classes (from the
first pass); a platform whose second pass differs from its first is flagged, and one that fails
or crashes is listed with the reason.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable

import numpy as np


def _plans(spec: dict):
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.run.adapter import selected_variants

    plans = []
    for name in spec["models"]:
        info = resolve_model(name)
        probes = generate(info, spec.get("kind"), n=spec["n"], seed=spec["seed"])
        plans.append((info, probes, selected_variants(info, probes.kind, spec.get("platforms"))))
    return plans


def _rel_err(outputs: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """Largest error relative to the largest reference value, over every float output."""
    errs = [
        float(np.abs(outputs[k].astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-30))
        for k, r in ref.items()
        if np.issubdtype(np.asarray(outputs[k]).dtype, np.floating) or str(outputs[k].dtype) == "bfloat16"
    ]
    return max(errs) if errs else float("nan")


def run_pass(plans, with_reference: bool, on_event: Callable[[dict], None], in_process: bool = False) -> list[dict]:
    from hspi_onnx.graph.float64 import compute_float64
    from hspi_onnx.run.runner import Runner, failure_reason

    rows = []
    on_event({"event": "plan", "total": sum(len(v) for _, _, v in plans)})
    with Runner(in_process=in_process) as runner:
        for info, probes, pairs in plans:
            ref = compute_float64(info, probes.inputs)[0] if with_reference else None
            for adapter, plat in pairs:
                row = {
                    "event": "platform",
                    "model": info.name,
                    "model_sha256": info.sha256,
                    "probes": probes.name,
                    "probes_sha256": probes.sha256,
                    "platform": str(plat),
                }
                try:
                    res = runner.run(adapter, info, plat, probes)
                    row |= {
                        "digest": res.set_digest(),
                        "dtype": ",".join(sorted(set(res.dtypes().values()))),
                        "seconds": round(res.seconds, 4),
                    }
                    if ref is not None:
                        row["rel_err"] = _rel_err(res.outputs, ref)
                except Exception as exc:  # one failing platform must not stop the survey
                    row["error"] = failure_reason(exc)
                rows.append(row)
                on_event(row)
    return rows


def survey(
    spec: dict, on_event: Callable[[int, dict], None] = lambda i, e: None, passes: int = 2, in_process: bool = False
) -> dict:
    """Run the matrix ``passes`` times, each with fresh worker processes; classes and repeat flags."""
    plans = _plans(spec)
    runs = [run_pass(plans, i == 0, functools.partial(on_event, i), in_process) for i in range(passes)]
    return summarize(runs)


def summarize(runs: list[list[dict]]) -> dict:
    first = runs[0]
    later = [{(r["model"], r["platform"]): r.get("digest") for r in run} for run in runs[1:]]
    models: dict[str, dict] = {}
    for r in first:
        m = models.setdefault(
            r["model"],
            {
                "model": r["model"],
                "model_sha256": r["model_sha256"],
                "probes": r["probes"],
                "probes_sha256": r["probes_sha256"],
                "platforms": [],
                "failed": [],
            },
        )
        if "error" in r:
            m["failed"].append({"platform": r["platform"], "error": r["error"]})
            continue
        repeats = all(d.get((r["model"], r["platform"])) == r["digest"] for d in later)
        m["platforms"].append(
            {k: r[k] for k in ("platform", "digest", "dtype", "seconds", "rel_err") if k in r} | {"repeats": repeats}
        )
    for m in models.values():
        groups: dict[str, list[dict]] = defaultdict(list)
        for p in m["platforms"]:
            groups[p["digest"]].append(p)
        classes = sorted(groups.values(), key=lambda g: (-len(g), g[0]["platform"]))
        m["classes"] = [
            {
                "id": i,
                "digest": g[0]["digest"],
                "platforms": [p["platform"] for p in g],
                "rel_err": max((p.get("rel_err", float("nan")) for p in g), default=None),
                "repeats": all(p["repeats"] for p in g),
            }
            for i, g in enumerate(classes)
        ]
        m["n_platforms"], m["n_classes"] = len(m["platforms"]), len(classes)
        m["not_repeating"] = [p["platform"] for p in m["platforms"] if not p["repeats"]]
    return {"passes": len(runs), "models": list(models.values())}
