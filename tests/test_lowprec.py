"""The graphs that carry precision into graph-typed runtimes (TensorRT's strongly typed
networks, ONNX Runtime's fp16 platforms), checked on the CPU: structure, constants, and
outputs from independent evaluators (ONNX's reference evaluator, ONNX Runtime)."""

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.lowprec import to_half
from hspi_onnx.inputs.probes import generate
from hspi_onnx.runtimes.tensorrt import TensorRtAdapter, network_graph


def _run(data, info, x):
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {info.primary.name: x})[0]


def _elem_types(model) -> set[int]:
    g = model.graph
    return {v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]} | {
        t.data_type for t in g.initializer
    }


@pytest.fixture(scope="module")
def probes(zoo):
    return {name: generate(zoo[name], n=8).primary for name in ("resnet", "lm")}


@pytest.mark.parametrize("name", ["resnet", "lm"])
def test_half_graphs_are_valid_typed_and_close_to_fp32(zoo, probes, name):
    info, x = zoo[name], probes[name]
    fp32 = info.load()
    ref = _run(fp32.SerializeToString(), info, x)
    scale = float(np.abs(ref).max())
    err = {}
    for precision, half_type in (("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)):
        half = to_half(fp32, precision)
        onnx.checker.check_model(half, full_check=True)  # includes topological order
        types = _elem_types(half)
        assert half_type in types and ({TensorProto.FLOAT16, TensorProto.BFLOAT16} - {half_type}).isdisjoint(types)
        assert [i.type.tensor_type.elem_type for i in half.graph.input] == [
            i.type.tensor_type.elem_type for i in fp32.graph.input
        ]  # inputs and outputs kept
        out = ReferenceEvaluator(half).run(None, {info.primary.name: x})[0]
        assert out.dtype == np.float32 and out.shape == ref.shape
        err[precision] = float(np.abs(out - ref).max()) / scale
    # each within its format's reach, and bf16 (8-bit significand) measurably coarser than fp16
    assert err["fp16"] < 2e-3 and err["bf16"] < 2e-2 and err["bf16"] > 4 * err["fp16"], err


def test_bf16_constants_are_rounded_once_from_fp32(zoo):
    fp32 = zoo["resnet"].load()
    originals = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer if t.data_type == TensorProto.FLOAT}
    half = to_half(fp32, "bf16")
    checked = 0
    for t in half.graph.initializer:
        if t.name in originals:
            got = np.frombuffer(t.raw_data, dtype="<u2").reshape(tuple(t.dims))
            want = originals[t.name].astype(ml_dtypes.bfloat16).view(np.uint16)
            assert t.data_type == TensorProto.BFLOAT16 and np.array_equal(got, want), t.name
            checked += 1
    assert checked == len(originals) > 10


def test_bf16_conversion_refuses_what_it_cannot_retype():
    # an EyeLike with dtype=FLOAT16 set by hand: an attribute the rewrite does not know
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    nodes = [
        helper.make_node("EyeLike", ["x"], ["e"], dtype=TensorProto.FLOAT16),
        helper.make_node("Cast", ["e"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(UnsupportedError, match="EyeLike"):
        to_half(model, "bf16")


@pytest.mark.parametrize("name", ["resnet", "lm"])
def test_tensorrt_graphs_carry_each_precision(zoo, probes, name):
    """What TensorRT parses for each precision, built without TensorRT: fp32/tf32 the model
    itself, fp16/bf16 typed graphs, int8 a symmetric Q/DQ graph (zero points all 0, Q/DQ only
    before Conv, MatMul and Gemm) whose top-1 agrees with fp32."""
    info, x = zoo[name], probes[name]
    kind = generate(info, n=1).kind
    trt = TensorRtAdapter()
    plat = {p: trt.platform("cuda:test", p, bs=8) for p in ("fp32", "tf32", "fp16", "bf16")}
    plat["int8"] = trt.platform("cuda:test", "int8", quant="qdq-sym", calib=kind, bs=8)
    original = info.load().SerializeToString()
    assert network_graph(info, plat["fp32"]) == network_graph(info, plat["tf32"]) == original
    for p, half_type in (("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)):
        assert half_type in _elem_types(onnx.load_from_string(network_graph(info, plat[p])))
    qdq = onnx.load_from_string(network_graph(info, plat["int8"]))
    inits = {t.name: t for t in qdq.graph.initializer}
    zero_points = [inits[n.input[2]] for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert len(zero_points) >= 5
    for zp in zero_points:
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), zp.name
    consumers: dict[str, set] = {}
    for n in qdq.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    for dq in (n for n in qdq.graph.node if n.op_type == "DequantizeLinear"):  # each feeds a GEMM-like op
        assert consumers.get(dq.output[0], set()) & {"Conv", "MatMul", "Gemm"}, dq.output[0]
    ref, out = _run(original, info, x), _run(qdq.SerializeToString(), info, x)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    with pytest.raises(UnsupportedError, match="fp8"):
        network_graph(info, trt.platform("cuda:test", "fp8", bs=8))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_nodes_are_ordered_by_what_subgraphs_read(precision):
    """An If whose branches read the graph input must come after the cast the converter adds
    for that input (it appends it last), or the graph is invalid and parsers stop."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    w = numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "w")
    branch = {
        op: helper.make_graph(
            [helper.make_node(op, ["x", "w"], [op])],
            op,
            [],
            [helper.make_tensor_value_info(op, TensorProto.FLOAT, [2, 3])],
        )
        for op in ("Add", "Sub")
    }
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch["Add"], else_branch=branch["Sub"])
    model = helper.make_model(
        helper.make_graph([node], "g", [x, c], [y], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 9
    half = to_half(model, precision)
    onnx.checker.check_model(half, full_check=True)
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = ReferenceEvaluator(half).run(None, {"x": xv, "c": np.array(False)})[0]
    assert np.allclose(out, xv - numpy_helper.to_array(w), atol=0.05)
