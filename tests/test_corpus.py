"""The coverage corpus (tests/corpus.py) through the graph tools and a small build: the
ONNX-to-PyTorch converter and the reference evaluator against ONNX Runtime on every model,
the float64 widening on a model with an If subgraph, a multi-input multi-output build, and
OpenVINO's failure reasons. The whole matrix is bench/corpus_coverage.py (docs/corpus.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import corpus  # noqa: E402  (tests/corpus.py)
from hspi_onnx.graph.lowprec import typed_left  # noqa: E402

RTOL = 1e-4
BATCH = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: path of the exported .onnx} for every corpus model."""
    out = tmp_path_factory.mktemp("corpus")
    return {name: corpus.export(name, out) for name in corpus.CORPUS}


def onnxruntime_outputs(path, feeds) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(got, want, rtol=RTOL) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        assert corpus.rel_error(g, w) <= rtol


@pytest.mark.parametrize("name", list(corpus.CORPUS))
def test_converter_matches_onnxruntime(exported, name):
    import torch

    from hspi_onnx.graph.to_torch import OnnxModule

    feeds = corpus.numpy_inputs(name, BATCH)
    module = OnnxModule(onnx.load(exported[name]))
    assert module.output_names == list(corpus.CORPUS[name].outputs)
    with torch.inference_mode():
        got = module(*(torch.from_numpy(feeds[k]) for k in module.input_names))
    assert_close([t.numpy() for t in got], onnxruntime_outputs(exported[name], feeds))


@pytest.mark.parametrize("name", list(corpus.CORPUS))
def test_reference_evaluator_matches_onnxruntime(exported, name):
    from hspi_onnx.graph.refops import reference_evaluator

    feeds = corpus.numpy_inputs(name, BATCH)
    got = reference_evaluator(onnx.load(exported[name])).run(None, feeds)
    assert_close(got, onnxruntime_outputs(exported[name], feeds))


def test_onnx_gather_elements_bug_on_sbert(exported):
    """onnx.reference's GatherElements keeps one index per row beyond 63 choices (refops.py);
    sbert gathers its 512-long token_type_ids buffer. Ours computes it."""
    from onnx.reference import ReferenceEvaluator

    from hspi_onnx.graph.refops import reference_evaluator

    proto, feeds = onnx.load(exported["sbert"]), corpus.numpy_inputs("sbert", BATCH)
    want = onnxruntime_outputs(exported["sbert"], feeds)
    try:
        plain = ReferenceEvaluator(proto).run(None, feeds)
    except ValueError as exc:  # the bug, as of onnx 1.23
        assert "cannot reshape array of size 1 into shape (1,16)" in str(exc)
    else:  # fixed upstream: then it must agree too (and refops' override can go)
        assert_close(plain, want)
    assert_close(reference_evaluator(proto).run(None, feeds), want)


_ORT_FP16 = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"], disabled_optimizers=sys.argv[3:])
np.save(sys.argv[2], sess.run(None, {"pixel_values": np.load(sys.argv[2])})[0])
"""


def test_vit_fp16_graph_is_valid_and_runs_without_the_crashing_fusion(exported, tmp_path):
    """vit's fp16 platforms at opt=all die by SIGSEGV in ONNX Runtime (microsoft/onnxruntime#28392,
    docs/corpus.md). The graph is not at fault: it is valid ONNX, and the same session with
    MatmulTransposeFusion (whose schema-less nodes NchwcTransformer dereferences) switched off
    computes vit within fp16 error (in a subprocess, lest the crash take pytest with it)."""
    pytest.importorskip("onnxruntime.transformers")
    from hspi_onnx.graph.lowprec import to_half

    half = to_half(onnx.load(exported["vit"]), "fp16")
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, tmp_path / "vit16.onnx")
    feeds = corpus.numpy_inputs("vit", BATCH)
    np.save(tmp_path / "io.npy", feeds["pixel_values"])
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _ORT_FP16,
            str(tmp_path / "vit16.onnx"),
            str(tmp_path / "io.npy"),
            "MatmulTransposeFusion",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert_close([np.load(tmp_path / "io.npy")], onnxruntime_outputs(exported["vit"], feeds), rtol=5e-3)


def float_left(proto) -> list[str]:
    """Where a float32 type, tensor or Cast target is still named, subgraphs included."""
    return typed_left(proto, onnx.TensorProto.FLOAT)


def test_float64_covers_if_branches_on_gru(exported):
    from hspi_onnx.graph.float64 import to_float64
    from hspi_onnx.graph.refops import reference_evaluator

    proto = onnx.load(exported["gru"])
    assert any(n.op_type == "If" for n in proto.graph.node) and float_left(proto)
    wide = to_float64(proto)
    onnx.checker.check_model(wide, full_check=True)
    assert float_left(wide) == []
    feeds = corpus.numpy_inputs("gru", BATCH)
    (got,) = reference_evaluator(wide).run(None, feeds)
    assert got.dtype == np.float64
    assert_close([got], onnxruntime_outputs(exported["gru"], feeds), rtol=1e-5)


def test_float64_covers_loop_bodies():
    """A Loop whose body adds a float Constant, casts to float and scans out: every float in
    the body is widened, and the result is the float64 one."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    from hspi_onnx.graph.float64 import to_float64
    from hspi_onnx.graph.refops import reference_evaluator

    third = np.float32(1 / 3)
    body = helper.make_graph(
        [
            helper.make_node("Constant", [], ["step"], value=numpy_helper.from_array(np.array(third), "step")),
            helper.make_node("Add", ["acc_in", "step"], ["sum"]),
            helper.make_node("Cast", ["sum"], ["acc_out"], to=T.FLOAT),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", T.INT64, []),
            helper.make_tensor_value_info("cond_in", T.BOOL, []),
            helper.make_tensor_value_info("acc_in", T.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", T.BOOL, []),
            helper.make_tensor_value_info("acc_out", T.FLOAT, []),
            helper.make_tensor_value_info("scan", T.FLOAT, []),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["go"], value=numpy_helper.from_array(np.array(True), "go")),
            helper.make_node("Loop", ["n", "go", "x"], ["y", "steps"], body=body),
        ],
        "loop",
        [helper.make_tensor_value_info("n", T.INT64, []), helper.make_tensor_value_info("x", T.FLOAT, [])],
        [helper.make_tensor_value_info("y", T.FLOAT, []), helper.make_tensor_value_info("steps", T.FLOAT, [None])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide = to_float64(proto)
    onnx.checker.check_model(wide, full_check=True)
    assert float_left(wide) == []
    y, steps = reference_evaluator(wide).run(None, {"n": np.array(3), "x": np.array(0.0)})
    assert y.dtype == steps.dtype == np.float64
    # 3 * third needs 26 significant bits: exact in float64, rounded in float32
    assert steps.ravel().tolist() == [float(third) * k for k in (1, 2, 3)] and y == float(third) * 3
    assert np.float32(third) + np.float32(third) + np.float32(third) != y


def test_build_stores_every_output_of_a_three_input_model(exported, tmp_path):
    """bert: 3 int64 inputs (dynamic sequence axis), 2 outputs; two platforms of two runtimes
    store both outputs for every probe, and agree."""
    pytest.importorskip("duckdb")
    from hspi_onnx.db.store import ReferenceDB

    patterns = ["onnxruntime/*/fp32/bs=1,opt=all,threads=1", "pytorch/*/fp32/bs=1,mode=eager,threads=1"]
    cmd = [
        sys.executable,
        "-m",
        "hspi_onnx.cli",
        "db",
        "build",
        str(exported["bert"]),
        "--db",
        str(tmp_path / "db"),
        "-n",
        "4",
        "-q",
        "--json",
    ]
    proc = subprocess.run(cmd + [a for p in patterns for a in ("-p", p)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["planned"] == len(report["built"]) == 2 and not report["failed"]
    db = ReferenceDB(tmp_path / "db")
    rows = (
        db.connect()
        .execute("SELECT runtime, output_name, probe_id, dtype, shape, output FROM outputs ORDER BY 1, 2, 3")
        .fetchall()
    )
    arrays: dict = {}
    for runtime, name, probe, dtype, shape, raw in rows:
        arrays.setdefault((runtime, name), []).append(np.frombuffer(raw, dtype=dtype).reshape(shape))
    outputs = ("last_hidden_state", "pooler_output")
    assert sorted(arrays) == [(r, o) for r in ("onnxruntime", "pytorch") for o in outputs]
    for (runtime, name), values in arrays.items():
        assert len(values) == 4 and values[0].shape == {"last_hidden_state": (16, 64), "pooler_output": (64,)}[name]
    for name in outputs:
        assert_close([np.stack(arrays["pytorch", name])], [np.stack(arrays["onnxruntime", name])])


@pytest.fixture
def openvino_adapter():
    pytest.importorskip("openvino")
    from hspi_onnx.runtimes.openvino import OpenVinoAdapter

    return OpenVinoAdapter()


def _prepare_error(adapter, path) -> str:
    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.inputs.model import resolve_model

    model = resolve_model(str(path))
    platform = adapter.variants(model, "noise")[0]
    with pytest.raises(UnsupportedError) as info:
        with adapter.prepare(model, platform):
            pass
    return str(info.value)


def test_openvino_names_the_operator_it_cannot_convert(openvino_adapter, tmp_path):
    from onnx import TensorProto as T
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="hspi.test")],
        "g",
        [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "mystery.onnx"
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("hspi.test", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    reason = _prepare_error(openvino_adapter, path)
    assert "No conversion rule found for operations: hspi.test.Mystery" in reason
    assert "Exception from src/" not in reason


def test_openvino_gru(openvino_adapter, exported):
    """OpenVINO 2026.4's EliminateSliceBeforeGatherElements pass drops the Slice before the
    GatherElements (docs/corpus.md): the reason names that node and OpenVINO's check. Should
    a release compile it, its outputs must match ONNX Runtime's instead."""
    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.inputs.model import resolve_model

    model = resolve_model(str(exported["gru"]))
    platform = next(p for p in openvino_adapter.variants(model, "tokens") if p.precision == "fp32")
    feeds = corpus.numpy_inputs("gru", int(platform.knob["bs"]))
    try:
        with openvino_adapter.prepare(model, platform) as session:
            got = session.run(feeds)
    except UnsupportedError as exc:
        assert (
            "GatherElements node '/GatherElements' (opset6): Shapes [?,20,48] and [?,1,24] are not consistent"
        ) in str(exc)
        assert "Exception from src/" not in str(exc)
    else:
        assert_close([got["logits"]], onnxruntime_outputs(exported["gru"], feeds))
