"""Measured kernel state: what decides a runtime's kernels, read from the running process.

A label must determine the bits. Some of what decides them is not a setting hspi-onnx makes but
state the process picked up when a library loaded: the BLAS kernel OpenBLAS chose for this CPU
(or was told to use by ``OPENBLAS_CORETYPE``), ATen's vectorisation level, oneDNN's instruction-set
limit, MKL's reproducibility branch. Adapters read that state from the loaded runtime
(:meth:`hspi_onnx.run.adapter.Adapter.measure`) and put the facts that change bits into their
labels as knobs (``Adapter.labelled``); :func:`check` refuses to run a platform in a process whose
measured state is not the one its label names. What each adapter measures, labels or pins is
in docs/labels.md; ``hspi survey knobs`` measures which knobs move bits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from hspi_onnx.errors import HspiError

# Environment variables known to steer kernels, by the fact they steer (named in error messages).
STEERED_BY = {
    "blas": ("OPENBLAS_CORETYPE",),
    "aten": ("ATEN_CPU_CAPABILITY",),
    "onednn": ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"),
    "mkl": ("MKL_CBWR",),
}


class LabelMismatch(HspiError):
    """A platform was asked to run in a process whose measured kernel state its label does not name."""


def token(text: str) -> str:
    """A free-form fact (a library's version string, an ISA name) as a label token."""
    t = re.sub(r"[^a-z0-9.+-]+", "-", str(text).strip().lower()).strip("-.+")
    return t[:60] or "unknown"


def numpy_dispatch() -> tuple[list[str], list[str]]:
    """(numpy's SIMD dispatch targets this process enabled, lowest first; its baseline): its own
    loops, e.g. exp or sums, pick kernels by CPU, and ``NPY_DISABLE_CPU_FEATURES`` removes some."""
    try:
        from numpy._core import _multiarray_umath as umath  # type: ignore[attr-defined]
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath  # type: ignore[no-redef]
    on = getattr(umath, "__cpu_features__", {})
    return (
        [t for t in getattr(umath, "__cpu_dispatch__", []) if on.get(t)],
        list(getattr(umath, "__cpu_baseline__", [])),
    )


def numpy_simd() -> str:
    """numpy's version and the highest SIMD target it dispatches to in this process."""
    import numpy as np

    enabled, baseline = numpy_dispatch()
    top = (enabled or baseline or ["none"])[-1]
    return f"{token(np.__version__)}-{token(top.replace('_', '-'))}"


def numpy_state() -> dict[str, str]:
    """What numpy computes with in this process: ``numpy`` is its version and SIMD dispatch level
    (:func:`numpy_simd`), ``blas`` the BLAS library it loaded (threadpoolctl), its version and the
    kernel (core type) it selected; thread count and threading layer are recorded beside them
    (they did not change bits, docs/equivalence-cpu.md)."""
    import numpy as np
    import threadpoolctl

    root = os.path.dirname(np.__file__)
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in infos if os.path.dirname(i.get("filepath", "")).startswith((root, root + ".libs"))]
    info = (mine or infos or [None])[0]
    if info is None:  # a numpy without a BLAS threadpoolctl knows: its own fallback loops
        return {"blas": "none", "numpy": numpy_simd(), "blas_threads": "1"}
    arch = info.get("architecture") or "unknown"
    return {
        "blas": f"{token(info.get('internal_api', 'blas'))}-{token(info.get('version') or '0')}-{token(arch)}",
        "blas_threads": str(info.get("num_threads", "")),
        "blas_threading": token(info.get("threading_layer") or "unknown"),
        "numpy": numpy_simd(),
    }


def onednn_limit(env: Mapping[str, str] | None = None) -> str:
    """oneDNN's instruction-set limit for a process started with ``env`` (this one's by default):
    ``ONEDNN_MAX_CPU_ISA`` (or its older name ``DNNL_MAX_CPU_ISA``), ``default`` when unset; oneDNN
    reads it once, when it first runs."""
    source: Mapping[str, str] = os.environ if env is None else env
    value = source.get("ONEDNN_MAX_CPU_ISA") or source.get("DNNL_MAX_CPU_ISA") or ""
    return token(value.replace("_", "-")) if value.strip() else "default"


# oneDNN's names of the instruction sets it dispatches to (as OpenVINO reports them), as tokens
# that match ONEDNN_MAX_CPU_ISA's values (AVX512_CORE -> avx512-core).
_ONEDNN_ISAS = {
    "Intel SSE4.1": "sse41",
    "Intel AVX": "avx",
    "Intel AVX2": "avx2",
    "Intel AVX2 with Intel DL Boost": "avx2-vnni",
    "Intel AVX2 with Intel DL Boost and bfloat16 support": "avx2-vnni-2",
    "Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions": "avx512-core",
    "Intel AVX-512 with Intel DL Boost": "avx512-core-vnni",
    "Intel AVX-512 with Intel DL Boost and bfloat16 support": "avx512-core-bf16",
    "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support": "avx512-core-fp16",
    "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit "
    "integer support": "avx512-core-amx-fp16",
    "Intel AVX-512 with Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer "
    "support": "avx512-core-amx",
}


def onednn_isa_token(description: str) -> str:
    """oneDNN's description of the ISA it runs (e.g. ``Intel AVX2``) as a token (``avx2``)."""
    return _ONEDNN_ISAS.get(description.strip(), token(description))


def check(platform, measured: dict[str, str], labelled: tuple[str, ...]) -> None:
    """Refuse a run whose process measures another kernel state than ``platform``'s label names."""
    knobs = platform.knob
    wrong = [
        (k, knobs.get(k, "(absent)"), measured.get(k, "(not measured)"))
        for k in labelled
        if knobs.get(k) != measured.get(k)
    ]
    if not wrong:
        return
    said = ", ".join(f"{k}={want}" for k, want, _ in wrong)
    found = ", ".join(f"{k}={got}" for k, _, got in wrong)
    env = sorted({f"{v}={os.environ[v]}" for k, _, _ in wrong for v in STEERED_BY.get(k, ()) if v in os.environ})
    hint = f" (this process has {', '.join(env)})" if env else ""
    raise LabelMismatch(
        f"{platform} says {said}, but the process running it measures {found}{hint}: "
        f"its outputs would be stored under a label that does not determine them"
    )


def split_label(label: str) -> tuple[tuple, dict[str, str]]:
    """(what was asked: runtime, version, precision and the knobs that are not measured;
    what was measured: the measured knobs and the device) of a label, by its runtime's adapter."""
    from hspi_onnx.labels import Platform
    from hspi_onnx.run.adapter import registry

    plat = Platform.parse(label)
    adapter = registry().get(plat.runtime)
    names = set(adapter.labelled_for(plat)) if adapter is not None else set()
    asked = (plat.runtime, plat.version, plat.precision, tuple((k, v) for k, v in plat.knobs if k not in names))
    return asked, {k: v for k, v in plat.knobs if k in names} | {"device": plat.device}


def differences(groups: dict[str, list[str]]) -> list[dict]:
    """Where groups of labels (each machine's, node's or DB's) ran the same platform setting with
    other measured state: per runtime and fact (a measured knob, or the device), the values each
    group has. Such platforms carry different labels and stay apart; this says why they did not
    meet. Groups that share a measured state for a setting (one also ran an extra cap) meet there
    and differ in nothing."""
    by_asked: dict[tuple, dict[str, set]] = {}
    for group, labels in groups.items():
        for label in labels:
            asked, measured = split_label(label)
            by_asked.setdefault(asked, {}).setdefault(group, set()).add(tuple(sorted(measured.items())))
    seen: dict[tuple[str, str], dict[str, set[str]]] = {}
    for asked, by_group in by_asked.items():
        if len(by_group) < 2 or set.intersection(*by_group.values()):
            continue  # one group only, or a measured state they share: the setting meets itself
        facts = {fact for states in by_group.values() for state in states for fact, _ in state}
        for fact in facts:
            values = {g: {dict(state).get(fact, "-") for state in states} for g, states in by_group.items()}
            if len({frozenset(v) for v in values.values()}) > 1:
                for g, v in values.items():
                    seen.setdefault((asked[0], fact), {}).setdefault(g, set()).update(v)
    out = []
    for (runtime, fact), by_group in sorted(seen.items()):
        out.append({"runtime": runtime, "fact": fact, "values": {g: sorted(v) for g, v in sorted(by_group.items())}})
    return out


def describe_difference(d: dict) -> str:
    shown = "; ".join(f"{g}: {', '.join(v)}" for g, v in d["values"].items())
    return (
        f"{d['runtime']} {d['fact']} differs ({shown}) for the same settings: their platforms are different "
        f"labels and stay apart"
    )
