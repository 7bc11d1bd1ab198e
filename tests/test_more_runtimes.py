"""OpenVINO and the ONNX reference evaluator: availability, a shard built, determinism."""

import numpy as np
import pytest

from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.graph.float64 import torch_float64
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import registry, selected_variants
from hspi_onnx.run.runner import execute

CASES = {
    "openvino": ("openvino/*/fp32/bs=8,threads=1", 1e-6),
    "onnxref": ("onnxref/*/fp32/bs=8", 1e-6),
}


@pytest.mark.parametrize("runtime", sorted(CASES))
def test_adapter_builds_a_deterministic_shard(runtime, zoo, tmp_path):
    adapter = registry()[runtime]
    assert adapter.available().ok, adapter.available().reason
    assert adapter.version() != "0"
    pattern, tol = CASES[runtime]
    info = zoo["digits"]
    probes = generate(info, n=24)
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [pattern])
    assert len(summary.built) == 1 and not summary.failed and not summary.nondeterministic
    (label,) = summary.built
    out = load_groups(db)[0].outputs[label]
    ((a, p),) = selected_variants(info, probes.kind, [pattern])
    again = execute(a, info, p, probes).first  # a second session: bit-identical
    assert again.tobytes() == out.tobytes()
    ref = torch_float64(info, probes.inputs)[info.output_names[0]]
    assert np.abs(out.astype(np.float64) - ref).max() <= tol * np.abs(ref).max() * 10


def test_reference_evaluator_fp64_tracks_the_float64_module(zoo):
    info = zoo["lm"]
    probes = generate(info, n=8)
    ((a, p),) = selected_variants(info, probes.kind, ["onnxref/*/fp64/bs=8"])
    out = execute(a, info, p, probes).first
    assert out.dtype == np.float64
    ref = torch_float64(info, probes.inputs)[info.output_names[0]]
    # the export stores float32 weights, so both widen the same numbers: agreement far beyond fp32
    assert np.abs(out - ref).max() <= 1e-7 * np.abs(ref).max()


def test_openvino_reports_unsupported_precisions_with_a_reason():
    from hspi_onnx.runtimes.openvino import supported_precisions

    support = supported_precisions()
    assert support["fp32"] == ""
    for precision, reason in registry()["openvino"].limitations().items():
        assert support[precision] and "does not report" in reason


def test_torch_compile_variant_builds_a_deterministic_shard(zoo, tmp_path):
    from hspi_onnx.graph.torch_module import compile_unavailable

    reason = compile_unavailable()
    if reason:
        assert "mode=compile" in registry()["pytorch"].limitations()
        pytest.skip(reason)
    info = zoo["digits"]
    probes = generate(info, n=16)
    assert selected_variants(info, probes.kind, ["pytorch/*/*/*mode=eager*"])
    pairs = selected_variants(info, probes.kind, ["pytorch/*/fp32/*mode=compile*"], extra=True)
    assert len(pairs) == 1
    with pytest.raises(Exception):  # opt-in: not in the default matrix
        selected_variants(info, probes.kind, ["pytorch/*/fp32/*mode=compile*"])
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [str(pairs[0][1])], extra=True)
    assert summary.built == [str(pairs[0][1])] and not summary.nondeterministic
    out = load_groups(db)[0].outputs[summary.built[0]]
    ref = torch_float64(info, probes.inputs)[info.output_names[0]]
    assert np.abs(out.astype(np.float64) - ref).max() <= 1e-5 * np.abs(ref).max()
