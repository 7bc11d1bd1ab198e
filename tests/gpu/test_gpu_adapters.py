"""GPU adapters, run on a machine with an NVIDIA GPU (HSPI_GPU=1 pytest tests/gpu).

Without HSPI_GPU these are skipped (tests/conftest.py); tests/test_adapters.py checks on every
machine that GPU variants are absent, with reasons, where there is no GPU."""

import pytest

from hspi_onnx.adapter import selected_variants
from hspi_onnx.dbbuild import build
from hspi_onnx.probes import generate
from hspi_onnx.store import ReferenceDB


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", [
    "pytorch/cuda:*/fp32/*tf32=off*", "pytorch/cuda:*/fp32/*tf32=on*", "pytorch/cuda:*/fp16/*",
    "onnxruntime/cuda:*/fp32/*ep=cuda*", "onnxruntime/cuda:*/fp16/*ep=tensorrt*",
    "tensorrt/*/fp32/*", "tensorrt/*/tf32/*", "tensorrt/*/fp16/*", "tensorrt/*/int8/*",
])
def test_gpu_platforms_build_deterministic_shards(zoo, tmp_path, pattern):
    info = zoo["resnet"]
    probes = generate(info.spec, n=32)
    pairs = selected_variants(info, probes.kind, [pattern])
    assert pairs
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [str(p) for _, p in pairs[:4]])
    assert summary.built and not summary.failed, summary.failed
    assert not summary.nondeterministic
