"""The converter's op registry: the op table and COVERED_OPS come from it, and every since is a
version ONNX defines for that op."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"conv_pool", "elementwise", "recurrent", "shapes", "module"}


def test_op_table_and_covered_ops_come_from_the_registry():
    from hspi_onnx.graph.to_torch import COVERED_OPS, OPS
    from hspi_onnx.graph.to_torch.ops import _MULTI_OUTPUT
    from hspi_onnx.graph.to_torch.registry import REGISTRY

    assert COVERED_OPS == sorted(REGISTRY)
    assert OPS == {name: e.fn for name, e in REGISTRY.items() if e.fn is not None}
    assert {name for name, e in REGISTRY.items() if e.fn is None} == {"Constant", "If"}
    assert _MULTI_OUTPUT == {
        "Split",
        "MaxPool",
        "LayerNormalization",
        "BatchNormalization",
        "Dropout",
        "RNN",
        "GRU",
        "LSTM",
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

    from hspi_onnx.graph.to_torch.registry import REGISTRY

    versions: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "":
            versions.setdefault(schema.name, set()).add(schema.since_version)
    wrong = {name: (e.since, sorted(versions.get(name, ()))) for name, e in REGISTRY.items()}
    wrong = {name: v for name, v in wrong.items() if v[0] not in v[1]}
    assert wrong == {}
