"""The survey: every available CPU platform on the zoo, run twice in fresh processes.

Each pass is a worker process (``python -m hspi_onnx.run.survey SPEC.json``) that prints JSON
lines: progress events, then one result with the digest of every platform's outputs. The
parent groups platforms whose outputs are bit-identical into equivalence classes (from the
first pass) and flags every platform whose second pass differs from its first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Callable

import numpy as np

from hspi_onnx.errors import HspiError


def worker(spec: dict, emit: Callable[[dict], None]) -> None:
    from hspi_onnx.run.adapter import selected_variants
    from hspi_onnx.run.execute import run_platform
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.outputs import set_digest
    from hspi_onnx.inputs.probes import generate

    plans = []
    for name in spec["models"]:
        info = resolve_model(name)
        probes = generate(info.spec, spec.get("kind"), n=spec["n"], seed=spec["seed"])
        plans.append((info, probes, selected_variants(info, probes.kind, spec.get("platforms"))))
    emit({"event": "plan", "total": sum(len(v) for _, _, v in plans)})
    for info, probes, pairs in plans:
        ref = None
        if spec.get("reference"):
            from hspi_onnx.graph.float64 import compute_float64

            ref, _ = compute_float64(info, probes.inputs)
        for adapter, plat in pairs:
            row = {"event": "platform", "model": info.name, "model_sha256": info.sha256,
                   "probes": probes.name, "probes_sha256": probes.sha256, "platform": str(plat)}
            try:
                res = run_platform(adapter, info, plat, probes)
                row |= {"digest": set_digest(res.digests()), "dtype": res.dtype,
                        "seconds": round(res.seconds, 4)}
                if ref is not None:
                    err = np.abs(res.outputs.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)
                    row["rel_err"] = float(err)
            except Exception as exc:  # one failing platform must not stop the survey
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            emit(row)


def _run_pass(spec: dict, on_event: Callable[[dict], None]) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "hspi_onnx.run.survey", fh.name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    rows = []
    try:
        for line in proc.stdout:
            event = json.loads(line)
            on_event(event)
            if event["event"] == "platform":
                rows.append(event)
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            tail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {proc.returncode}"
            raise HspiError(f"survey worker failed: {tail}")
    finally:
        os.unlink(fh.name)
        if proc.poll() is None:
            proc.kill()
    return rows


def survey(spec: dict, on_event: Callable[[int, dict], None] = lambda i, e: None, passes: int = 2) -> dict:
    """Run the matrix ``passes`` times in fresh processes; classes and repeat flags."""
    runs = [_run_pass({**spec, "reference": i == 0}, lambda e, i=i: on_event(i, e)) for i in range(passes)]
    return summarize(runs)


def summarize(runs: list[list[dict]]) -> dict:
    first = runs[0]
    later = [{(r["model"], r["platform"]): r.get("digest") for r in run} for run in runs[1:]]
    models: dict[str, dict] = {}
    for r in first:
        m = models.setdefault(r["model"], {"model": r["model"], "model_sha256": r["model_sha256"],
                                           "probes": r["probes"], "probes_sha256": r["probes_sha256"],
                                           "platforms": [], "failed": []})
        if "error" in r:
            m["failed"].append({"platform": r["platform"], "error": r["error"]})
            continue
        repeats = all(d.get((r["model"], r["platform"])) == r["digest"] for d in later)
        m["platforms"].append({k: r[k] for k in ("platform", "digest", "dtype", "seconds", "rel_err") if k in r}
                              | {"repeats": repeats})
    for m in models.values():
        groups: dict[str, list[dict]] = defaultdict(list)
        for p in m["platforms"]:
            groups[p["digest"]].append(p)
        classes = sorted(groups.values(), key=lambda g: (-len(g), g[0]["platform"]))
        m["classes"] = [{"id": i, "digest": g[0]["digest"], "platforms": [p["platform"] for p in g],
                         "rel_err": max((p.get("rel_err", float("nan")) for p in g), default=None),
                         "repeats": all(p["repeats"] for p in g)} for i, g in enumerate(classes)]
        m["n_platforms"], m["n_classes"] = len(m["platforms"]), len(classes)
        m["not_repeating"] = [p["platform"] for p in m["platforms"] if not p["repeats"]]
    return {"passes": len(runs), "models": list(models.values())}


def _main(argv: list[str]) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    with open(argv[0]) as fh:
        spec = json.load(fh)

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    worker(spec, emit)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
