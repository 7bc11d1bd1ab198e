"""The converter's op registry: the op table and COVERED_OPS come from it, every since is a
version ONNX defines for that op, a model importing an older version is refused, and the
coverage table in docs/adapters.md is what the registry renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {
    "attention",
    "conv_pool",
    "detection",
    "elementwise",
    "recurrent",
    "sampling",
    "shapes",
    "spectral",
    "module",
}


def test_op_table_and_covered_ops_come_from_the_registry():
    from hspi_onnx.graph.to_torch import COVERED_OPS, OPS
    from hspi_onnx.graph.to_torch.ops import _MULTI_OUTPUT
    from hspi_onnx.graph.to_torch.registry import REGISTRY

    assert COVERED_OPS == sorted(REGISTRY)
    assert OPS == {name: e.fn for name, e in REGISTRY.items() if e.fn is not None}
    assert {name for name, e in REGISTRY.items() if e.fn is None} == {"Constant", "If", "Scan", "Loop"}
    assert _MULTI_OUTPUT == {
        "Split",
        "MaxPool",
        "LayerNormalization",
        "BatchNormalization",
        "Dropout",
        "RNN",
        "GRU",
        "LSTM",
        "Attention",
        "SoftmaxCrossEntropyLoss",
        "DynamicQuantizeLinear",
        "Unique",
        "CausalConvWithState",
        "LinearAttention",
    }
    assert {e.family for e in REGISTRY.values()} == FAMILIES
    for family in FAMILIES:
        assert (ROOT / "hspi_onnx/graph/to_torch" / f"{family}.py").is_file()


def test_registering_an_op_twice_fails():
    from hspi_onnx.graph.to_torch.registry import REGISTRY, OpEntry, add

    with pytest.raises(ValueError, match="registered twice"):
        add(OpEntry("Conv", 1, "elsewhere", None))
    assert REGISTRY["Conv"].family == "conv_pool"


def test_every_since_is_a_version_onnx_defines_for_the_op():
    from onnx import defs

    from hspi_onnx.graph.to_torch.module import PREVIEW_DOMAIN, PREVIEW_OPS
    from hspi_onnx.graph.to_torch.registry import REGISTRY

    versions: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "" or (schema.domain == PREVIEW_DOMAIN and schema.name in PREVIEW_OPS):
            versions.setdefault(schema.name, set()).add(schema.since_version)
    wrong = {name: (e.since, sorted(versions.get(name, ()))) for name, e in REGISTRY.items()}
    wrong = {name: v for name, v in wrong.items() if v[0] not in v[1]}
    assert wrong == {}


def _pad_model(opset: int):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if opset < 11:  # Pad-2: pads and value are attributes
        node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 2], value=1.5)
        inits = []
    else:
        node = helper.make_node("Pad", ["x", "pads", "value"], ["y"])
        inits = [helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 2]),
                 helper.make_tensor("value", TensorProto.FLOAT, [], [1.5])]  # fmt: skip
    graph = helper.make_graph([node], "pad", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_an_op_version_older_than_since_is_refused_before_it_runs():
    import torch

    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.graph.to_torch import OnnxModule

    with pytest.raises(UnsupportedError, match=r"op versions \(opset 10\): Pad-2 \(covered from Pad-11\)"):
        OnnxModule(_pad_model(10))
    (y,) = OnnxModule(_pad_model(11))(torch.ones(2, 3))
    assert y.shape == (2, 6) and float(y[0, 0]) == 1.5 and float(y[0, 1]) == 1.0


def test_an_older_version_inside_a_subgraph_is_refused():
    import torch
    from onnx import TensorProto, helper

    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.graph.to_torch import OnnxModule

    def branch(op):
        out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node(op, ["x"], ["b"])], op, [], [out])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("Hardmax"), else_branch=branch("Relu"))
    graph = helper.make_graph(
        [node],
        "if",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(UnsupportedError, match=r"Hardmax-11 \(covered from Hardmax-13\)"):
        OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]))
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    (y,) = module(torch.tensor(True), torch.from_numpy(np.array([[1, 3, 2], [0, -1, 0]], np.float32)))
    assert y.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_adapters_md_table_is_the_registry():
    from hspi_onnx.graph.to_torch import coverage

    path = ROOT / "docs" / "adapters.md"
    text = path.read_text(encoding="utf-8")
    assert coverage.updated(text) == text, (
        "docs/adapters.md's op table is out of date: python -m hspi_onnx.graph.to_torch.coverage --write docs/adapters.md"
    )
    assert coverage.main(["--check", str(path)]) == 0


def test_coverage_check_reports_a_stale_table(tmp_path, capsys):
    from hspi_onnx.graph.to_torch import coverage

    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{coverage.BEGIN}\n| Op |\n{coverage.END}\nafter\n", encoding="utf-8")
    assert coverage.main(["--check", str(doc)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert coverage.main(["--write", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"before\n{coverage.BEGIN}\n| Op | Since | Module | Notes |")
    assert "| Conv | 1 | `conv_pool.py` |" in text and text.endswith(f"{coverage.END}\nafter\n")
    assert coverage.main(["--check", str(doc)]) == 0
    doc.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ops:begin"):
        coverage.main(["--check", str(doc)])
