import numpy as np
import pytest

from hspi_onnx.errors import UnknownPlatformError
from hspi_onnx.graph.float64 import torch_float64
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import available_variants, registry, resolve_platform, selected_variants
from hspi_onnx.run.runner import execute


def test_builtin_adapters_come_through_entry_points():
    import importlib.metadata as md

    names = {ep.name for ep in md.entry_points(group="hspi_onnx.runtimes")}
    assert {"onnxruntime", "pytorch", "openvino"} <= names
    reg = registry()
    for name in ("onnxruntime", "pytorch", "openvino"):
        assert reg[name].available().ok, reg[name].available().reason
        assert reg[name].version() != "0"


def test_variant_counts(zoo):
    counts = {m: {} for m in ("resnet", "lm")}
    for m in counts:
        for adapter, p in available_variants(zoo[m], "noise" if m == "resnet" else "tokens"):
            counts[m][adapter.name] = counts[m].get(adapter.name, 0) + 1
    # ORT: 4 precisions x 4 opt levels x 2 batch sizes x 2 thread counts
    assert counts["resnet"]["onnxruntime"] == counts["lm"]["onnxruntime"] == 64
    # PyTorch: 3 precisions x 2 sources x 2 batch sizes x 2 thread counts, x 2 layouts for CNNs
    assert counts["resnet"]["pytorch"] == 48 and counts["lm"]["pytorch"] == 24
    # OpenVINO: the precisions this CPU supports (fp32 always) x 2 batch sizes x 2 thread counts
    from hspi_onnx.runtimes.openvino import supported_precisions

    here = [p for p, reason in supported_precisions().items() if not reason]
    assert "fp32" in here and counts["resnet"]["openvino"] == counts["lm"]["openvino"] == 4 * len(here)
    assert set(registry()["openvino"].limitations()) == set(supported_precisions()) - set(here)


# Relative error bands: max |y - y64| / max |y64| over the probes, for fp32 (~1e-5 relative),
# fp16, bf16 and int8. Measured maxima on the zoo are about 3e-7, 1e-3, 8e-3 and 2e-2.
BANDS = {"fp64": (0, 1e-7), "fp32": (0, 1e-5), "fp16": (1e-5, 5e-3), "bf16": (5e-4, 4e-2), "int8": (5e-4, 1.5e-1)}


def _rel_err(out, ref):
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "digits", "lm"])
def test_precisions_fall_in_their_error_bands(zoo, name):
    info = zoo[name]
    probes = generate(info, n=8, seed=5)
    ref = torch_float64(info, probes.inputs)[info.output_names[0]]
    seen = set()
    for adapter, p in available_variants(info, probes.kind):
        k = p.knob
        if (
            k["bs"] != "8"
            or k.get("threads", "1") != "1"
            or k.get("opt", "all") != "all"
            or k.get("layout", "nchw") == "nhwc"
        ):
            continue
        res = execute(adapter, info, p, probes)
        lo, hi = BANDS[p.precision]
        err = _rel_err(res.first, ref)
        assert lo <= err <= hi, f"{p}: relative error {err:.2e} outside [{lo}, {hi}]"
        want_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}.get(p.precision, "float32")
        assert res.dtypes()[info.output_names[0]] == (
            want_dtype if adapter.name in ("pytorch", "onnxref") else "float32"
        )
        seen.add((adapter.name, p.precision))
    from hspi_onnx.runtimes.openvino import supported_precisions

    ov = {("openvino", p) for p, reason in supported_precisions().items() if not reason}
    # ORT fp32/fp16/int8, PyTorch fp32/bf16/fp16, OpenVINO's precisions on this CPU
    assert (
        seen
        == {
            ("onnxruntime", "fp32"),
            ("onnxruntime", "fp16"),
            ("onnxruntime", "int8"),
            ("pytorch", "fp32"),
            ("pytorch", "bf16"),
            ("pytorch", "fp16"),
            ("onnxref", "fp32"),
            ("onnxref", "fp64"),
        }
        | ov
    )


def test_converter_runs_every_zoo_export_like_its_module(zoo):
    import torch

    from hspi_onnx.graph.to_torch import convert
    from hspi_onnx.graph.torch_module import build_torch_module

    for name, info in zoo.items():
        x = torch.from_numpy(generate(info, n=4).primary)
        with torch.no_grad():
            (a,) = convert(info.load())(x)
            a = a.numpy()
            b = build_torch_module(info, "module", "fp32")(x).numpy()
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), name


def _tiny_onnx(path, op="Relu", opset=17):
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.linspace(-1, 1, 12).tolist())
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node(op, ["h"], ["y0"]),
        helper.make_node("Softmax", ["y0"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.save(model, path)
    return path


def test_user_onnx_runs_on_both_runtimes(tmp_path):
    from hspi_onnx.inputs.model import resolve_model

    info = resolve_model(_tiny_onnx(tmp_path / "tiny.onnx"))
    assert info.primary.kind == "tensor" and info.primary.shape == (4,) and info.zoo is None
    assert info.output_names == ["y"]
    probes = generate(info, n=5)
    outs = {}
    for adapter, p in available_variants(info, probes.kind):
        if (
            p.precision == "fp32"
            and p.knob["bs"] == "1"
            and p.knob.get("threads", "1") == "1"
            and p.knob.get("opt", "all") == "all"
        ):
            assert p.knob.get("src", "onnx") == "onnx"
            outs[adapter.name] = execute(adapter, info, p, probes).outputs["y"]
    assert set(outs) == {"onnxruntime", "pytorch", "openvino", "onnxref"}
    for other in ("pytorch", "openvino", "onnxref"):
        assert np.allclose(outs["onnxruntime"], outs[other], rtol=1e-5, atol=1e-7), other


def test_converter_names_uncovered_ops(tmp_path):
    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.inputs.model import resolve_model

    # Hardmax-11 (an input coerced to 2-D): the converter follows Hardmax from 13 only
    info = resolve_model(_tiny_onnx(tmp_path / "t.onnx", op="Hardmax", opset=11))
    adapter, p = resolve_platform("pytorch/*/fp32/bs=1,threads=1", info, "noise")
    with pytest.raises(UnsupportedError, match="does not cover these op versions .opset 11.: Hardmax-11"):
        execute(adapter, info, p, generate(info, n=2))


def test_resolve_platform_lists_close_matches(zoo):
    with pytest.raises(UnknownPlatformError, match="close matches"):
        label = next(str(p) for _, p in available_variants(zoo["digits"], "noise") if "opt=disabled" in str(p)).replace(
            "opt=disabled", "opt=disable"
        )
        resolve_platform(label, zoo["digits"], "noise")
    with pytest.raises(UnknownPlatformError, match="no adapter for runtime 'mxnet'"):
        resolve_platform("mxnet@1/cuda:h100/fp16/-", zoo["digits"], "noise")
    if not registry()["tensorrt"].available().ok:
        with pytest.raises(UnknownPlatformError, match="runtime tensorrt is unavailable: "):
            resolve_platform("tensorrt@10/cuda:h100/fp16/-", zoo["digits"], "noise")
        with pytest.raises(UnknownPlatformError, match="runtime tensorrt is unavailable: "):
            selected_variants(zoo["digits"], "noise", ["tensorrt/*/fp16/*"])  # a glob says why too


def test_batches_are_padded_to_the_labelled_size(zoo):
    info = zoo["digits"]
    probes = generate(info, n=11)
    adapter, p8 = resolve_platform("onnxruntime/*/fp32/bs=8,opt=all,threads=1", info, "noise")
    _, p1 = resolve_platform("onnxruntime/*/fp32/bs=1,opt=all,threads=1", info, "noise")
    a, b = execute(adapter, info, p8, probes), execute(adapter, info, p1, probes)
    assert a.first.shape == b.first.shape == (11, 10)
    assert np.allclose(a.first, b.first, rtol=1e-4, atol=1e-5)


def test_gpu_variants_are_absent_with_reasons_without_a_gpu(zoo):
    from hspi_onnx.host import gpu_names

    if gpu_names():
        pytest.skip("this machine has an NVIDIA GPU")
    info = zoo["digits"]
    labels = [str(p) for _, p in selected_variants(info, "noise", None)]
    assert not any("/cuda:" in lab for lab in labels)
    limits = {name: a.limitations() for name, a in registry().items() if a.available().ok}
    assert "cuda" in limits["pytorch"] and limits["pytorch"]["cuda"]
    assert set(limits["onnxruntime"]) == {"ep=cuda", "ep=tensorrt"}
    trt = registry()["tensorrt"].available()  # the native TensorRT adapter: listed, unavailable, with why
    assert not trt.ok and ("tensorrt" in trt.reason or "GPU" in trt.reason)
