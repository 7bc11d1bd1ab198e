"""GPU adapters, run on a machine with an NVIDIA GPU (HSPI_GPU=1 pytest tests/gpu).

Without HSPI_GPU these are skipped (tests/conftest.py); tests/test_adapters.py checks on every
machine that GPU variants are absent, with reasons, where there is no GPU."""

import pytest

from hspi_onnx.db.build import build
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import registry, selected_variants


def skip_where_missing(pattern: str) -> None:
    """Skip, with the adapter's own reason, a pattern whose runtime or GPU provider this machine
    lacks (a GPU machine with only torch has no onnxruntime-gpu and no TensorRT): a missing
    runtime is not a failing one."""
    adapter = registry()[pattern.split("/")[0]]
    ok = adapter.available()
    if not ok.ok:
        pytest.skip(ok.reason)
    for key, reason in adapter.limitations().items():
        if key in ("cuda", "ep=cuda", "ep=tensorrt") and key in pattern:
            pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "pattern",
    [
        "pytorch/cuda:*/fp32/*tf32=off*",
        "pytorch/cuda:*/fp32/*tf32=on*",
        "pytorch/cuda:*/fp16/*",
        "onnxruntime/cuda:*/fp32/*ep=cuda*",
        "onnxruntime/cuda:*/fp16/*ep=tensorrt*",
        "tensorrt/*/fp32/*",
        "tensorrt/*/tf32/*",
        "tensorrt/*/fp16/*",
        "tensorrt/*/bf16/*",
        "tensorrt/*/int8/*",
    ],
)
def test_gpu_platforms_build_deterministic_shards(zoo, tmp_path, pattern):
    skip_where_missing(pattern)
    info = zoo["resnet"]
    probes = generate(info, n=32)
    pairs = selected_variants(info, probes.kind, [pattern])
    if not pairs and "bf16" in pattern:
        pytest.skip("this GPU has no bf16")
    assert pairs
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [str(p) for _, p in pairs[:4]])
    assert summary.built and not summary.failed, summary.failed
    assert not summary.nondeterministic


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ["tensorrt", "pytorch", "onnxruntime"])
def test_gpu_precisions_change_the_outputs(zoo, runtime):
    """Each reduced precision gives outputs of its own, close to fp32 but not bit-identical
    to it: a precision that silently fell back to fp32 (a builder flag a TensorRT version
    ignores, say) fails here."""
    import numpy as np

    from hspi_onnx.run.runner import execute

    skip_where_missing(f"{runtime}/cuda:*/*/*ep=cuda*" if runtime == "onnxruntime" else f"{runtime}/cuda:*")
    info = zoo["resnet"]
    probes = generate(info, n=16)
    adapter = registry()[runtime]
    by_precision = {}
    for _, plat in selected_variants(info, probes.kind, [f"{runtime}/cuda:*/*/*bs=8*"]):
        if plat.knob.get("tf32") == "on" or plat.knob.get("cudnn") == "benchmark" or plat.knob.get("opt") == "disabled":
            continue
        by_precision.setdefault(plat.precision, plat)
    assert "fp32" in by_precision and len(by_precision) > 1, sorted(by_precision)
    outs = {p: execute(adapter, info, plat, probes).first.astype(np.float32) for p, plat in by_precision.items()}
    scale = float(np.abs(outs["fp32"]).max())
    for p, out in outs.items():
        if p in ("fp32", "tf32"):
            continue
        assert not np.array_equal(out, outs["fp32"]), f"{runtime} {p} is bit-identical to fp32"
        assert float(np.abs(out - outs["fp32"]).max()) < 0.1 * scale, f"{runtime} {p} is far from fp32"
