"""The knob survey (``hspi survey knobs``): which environment variables and runtime settings move
a platform's bits, and whether its label moves with them.

For each runtime family, one or more base platforms run in fresh processes: twice as they come
(the baseline, which must repeat itself), then once under each variation: an environment variable
known to steer kernels somewhere (set before the process starts, as a machine's environment
would), or one of the settings the adapter pins (overridden in that process alone). Each process
builds its labels itself, as a build on a machine with that environment would, picks the base
platform's variant and runs it through :func:`hspi_onnx.run.runner.execute`, whose label check
refuses a run whose measured kernel state its label does not name.

A row's verdict: ``no effect`` (same bits, same label); ``not offered`` (the adapter does not list
the platform in that state, e.g. OpenVINO bf16 under an AVX2 limit); ``labelled`` (bits and label both moved);
``label only`` (the label moved, the bits did not: a harmless split); ``pinned`` (a setting the
adapter fixes moved the bits, so no build ever runs it otherwise); ``refused`` (the label check
stopped the run); ``BUG`` (an environment variable moved the bits and not the label: two outputs
under one label). A survey with a BUG row fails (exit 1).
"""

from __future__ import annotations

import json
import os
import platform as _pyplatform
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Variation:
    kind: str  # "env": an environment variable at process start; "setting": an adapter pin overridden
    key: str
    value: object

    @property
    def name(self) -> str:
        return f"{self.key}={self.value}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "knob": self.key, "value": self.value}


def _x86() -> bool:
    return _pyplatform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def env_variations() -> list[Variation]:
    """Environment variables that steer kernels in some library a runtime loads, with values
    that differ from this machine's state (on x86; on Arm the ISA limits are left out)."""
    from hspi_onnx.run.kernels import numpy_dispatch, numpy_state

    state = numpy_state()
    current = state["blas"].rsplit("-", 1)[-1]
    cores = ["Sandybridge", "Haswell", "SkylakeX"] if _x86() else ["ARMV8", "NEOVERSEN1"]
    out = [Variation("env", "OPENBLAS_CORETYPE", c) for c in cores if c.lower() != current]
    out += [Variation("env", v, 1) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")]
    if _x86():
        out += [
            Variation("env", "ATEN_CPU_CAPABILITY", "avx2"),
            Variation("env", "ATEN_CPU_CAPABILITY", "default"),
            Variation("env", "ONEDNN_MAX_CPU_ISA", "AVX2"),
            Variation("env", "DNNL_MAX_CPU_ISA", "AVX2"),
            Variation("env", "MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ]
    out += [
        Variation("env", "MKL_CBWR", "COMPATIBLE"),
        Variation("env", "MKL_CBWR", "AUTO"),
        Variation("env", "ONEDNN_DEFAULT_FPMATH_MODE", "BF16"),
    ]
    enabled, _ = numpy_dispatch()
    if enabled:  # numpy's highest SIMD target, disabled
        out.append(Variation("env", "NPY_DISABLE_CPU_FEATURES", enabled[-1]))
    return out


# Settings the adapters pin, each varied to a value the runtime accepts.
SETTINGS: dict[str, list[tuple[str, object]]] = {
    "onnxruntime": [
        ("session.set_denormal_as_zero", "1"),
        ("session.intra_op.allow_spinning", "1"),
        ("inter_op_threads", 2),
    ],
    "openvino": [
        ("CPU_DENORMALS_OPTIMIZATION", True),
        ("EXECUTION_MODE_HINT", "ACCURACY"),
        ("PERFORMANCE_HINT", "THROUGHPUT"),
        ("NUM_STREAMS", 2),
    ],
    "pytorch": [("flush_denormal", True), ("float32_matmul_precision", "medium"), ("mkldnn", False)],
    "onnxref": [("blas_threads", 2)],
}
SETTINGS["transformers"] = SETTINGS["pytorch"]  # the same torch pins (hspi_onnx/run/torch_cpu.py)


def setting_variations(family: str) -> list[Variation]:
    return [Variation("setting", k, v) for k, v in SETTINGS.get(family, [])]


def default_bases(model, probe_kind: str) -> list[tuple[str, str]]:
    """(family, label) of each base platform: per available family its fp32 CPU platform, and its
    bf16 one where it has one, with the largest batch, one thread and the first default knobs
    (optimization all, eager mode, the zoo module before the converter, the plain layout)."""
    from hspi_onnx.run.adapter import available_variants

    groups: dict[tuple[str, str], list] = {}
    for adapter, plat in available_variants(model, probe_kind):
        k = plat.knob
        if (
            plat.device_kind == "cpu"
            and plat.precision in ("fp32", "bf16")
            and k.get("threads", "1") == "1"
            and k.get("mode", "eager") == "eager"
            and not k.get("quant")
            and k.get("opt", "all") == "all"
            and k.get("layout", "nchw") in ("nchw", "plain")
        ):
            groups.setdefault((adapter.name, plat.precision), []).append(plat)
    out = []
    for (family, _), plats in sorted(groups.items()):
        best = min(plats, key=lambda p: (p.knob.get("src", "module") != "module", -int(p.knob.get("bs", 1)), str(p)))
        out.append((family, str(best)))
    return out


def _requested(label: str) -> dict:
    """What a child process is asked for: the label less its measured knobs (it measures its own)."""
    from hspi_onnx.run.kernels import split_label

    (runtime, _, precision, knobs), measured = split_label(label)
    return {"runtime": runtime, "precision": precision, "device": measured["device"], "knobs": dict(knobs)}


def run_child(model_ref: str, n: int, seed: int, label: str, variation: Variation | None) -> dict:
    """One fresh process: builds its own labels, runs the base platform's variant, reports."""
    env = dict(os.environ)
    request = {"model": model_ref, "n": n, "seed": seed, **_requested(label), "pins": {}}
    if variation is not None:
        if variation.kind == "env":
            env[variation.key] = str(variation.value)
        else:
            request["pins"] = {variation.key: variation.value}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hspi_onnx.run.knobs"],
            input=json.dumps(request),
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": (tail[-1] if tail else f"exit code {proc.returncode}")[:300]}
    return json.loads(lines[-1])


def verdict(variation: Variation, base: dict, got: dict) -> str:
    if "error" in got:
        if got["error"].startswith("0 platforms here match"):
            return "not offered"  # the adapter does not list the platform under this state
        return "refused" if "LabelMismatch" in got["error"] else "error"
    bits = got["digest"] != base["digest"]
    label = got["label"] != base["label"]
    if bits and label:
        return "labelled"
    if label:
        return "label only"
    if bits:
        return "pinned" if variation.kind == "setting" else "BUG"
    return "no effect"


def survey_knobs(
    model_ref: str,
    n: int = 16,
    seed: int = 0,
    bases: list[tuple[str, str]] | None = None,
    on_event: Callable[[dict], None] = lambda e: None,
    jobs: int = 2,
    only: list[str] | None = None,
) -> dict:
    """Every variation (``only``: those of these variable or setting names) on every base platform,
    each in a fresh process; rows with verdicts."""
    from hspi_onnx.host import cpu_facts
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    model = resolve_model(model_ref)
    probes = generate(model, n=n, seed=seed)
    bases = bases if bases is not None else default_bases(model, probes.kind)
    envs = env_variations()
    work: list[tuple[str, str, Variation | None]] = []
    for family, label in bases:
        work += [(family, label, None), (family, label, None)]
        work += [(family, label, v) for v in envs + setting_variations(family) if not only or v.key in only]
    on_event({"event": "plan", "total": len(work)})

    def one(item):
        family, label, v = item
        got = run_child(model_ref, n, seed, label, v)
        on_event({"event": "done", "label": label, "variation": v.name if v else "baseline"})
        return item, got

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, work))
    baselines: dict[str, list[dict]] = {}
    for (family, label, v), got in results:
        if v is None:
            baselines.setdefault(label, []).append(got)
    rows, base_rows = [], []
    for label, (first, second) in baselines.items():
        ok = "error" not in first and "error" not in second
        base_rows.append(
            {
                "base": label,
                "label_here": first.get("label"),
                "digest": first.get("digest"),
                "repeats": ok and first["digest"] == second["digest"] and first["label"] == second["label"],
                "error": first.get("error") or second.get("error"),
                "state": first.get("state", {}),
            }
        )
    for (family, label, v), got in results:
        if v is None:
            continue
        base = baselines[label][0]
        if "error" in base:
            continue
        row = {
            "family": family,
            "base": label,
            **v.as_dict(),
            "verdict": verdict(v, base, got),
            "bits_changed": None if "error" in got else got["digest"] != base["digest"],
            "label_changed": None if "error" in got else got["label"] != base["label"],
        }
        if "error" in got:
            row["error"] = got["error"]
        elif row["label_changed"]:
            row["label"] = got["label"]
            row["label_diff"] = label_diff(base["label"], got["label"])
        rows.append(row)
    bugs = [r for r in rows if r["verdict"] == "BUG"]
    return {
        "model": model.name,
        "model_sha256": model.sha256,
        "n": n,
        "seed": seed,
        "host": cpu_facts(),
        "bases": base_rows,
        "rows": rows,
        "bugs": len(bugs),
        "not_repeating": [b["base"] for b in base_rows if not b["repeats"]],
    }


def label_diff(a: str, b: str) -> str:
    """What differs between two labels, segment by segment (``knob: old -> new``)."""
    from hspi_onnx.labels import Platform

    pa, pb = Platform.parse(a), Platform.parse(b)
    out = [
        f"{seg} {getattr(pa, seg)} -> {getattr(pb, seg)}"
        for seg in ("runtime", "version", "device", "precision")
        if getattr(pa, seg) != getattr(pb, seg)
    ]
    ka, kb = pa.knob, pb.knob
    out += [f"{k} {ka.get(k, '-')} -> {kb.get(k, '-')}" for k in sorted(set(ka) | set(kb)) if ka.get(k) != kb.get(k)]
    return "; ".join(out)


def _child() -> int:
    """``python -m hspi_onnx.run.knobs``: one survey run, the request as JSON on stdin."""
    import warnings

    warnings.filterwarnings("ignore")
    req = json.loads(sys.stdin.read())
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.run.adapter import registry
    from hspi_onnx.run.runner import execute

    model = resolve_model(req["model"])
    probes = generate(model, n=req["n"], seed=req["seed"])
    adapter = registry()[req["runtime"]]
    if req["pins"]:
        adapter.pins = {**adapter.pins, **req["pins"]}
    want = {key: req[key] for key in ("runtime", "precision", "device", "knobs")}

    def matching(plats):
        return [p for p in plats if _requested(str(p)) == want]

    found = matching(adapter.variants(model, probes.kind)) or matching(adapter.extra_variants(model, probes.kind))
    if len(found) != 1:
        print(
            json.dumps(
                {"error": f"{len(found)} platforms here match {req['runtime']} {req['precision']} {req['knobs']}"}
            )
        )
        return 0
    try:
        result = execute(adapter, model, found[0], probes)
    except Exception as exc:
        print(
            json.dumps(
                {
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                    "label": str(found[0]),
                }
            )
        )
        return 0
    print(json.dumps({"label": str(found[0]), "digest": result.set_digest(), "state": result.host.get("kernels", {})}))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
