"""The float64 reference: the model's ONNX graph widened to float64 and computed by ONNX's
reference evaluator — the graph every ONNX platform runs — or, for graphs it cannot widen
(subgraphs, custom domains), the model in PyTorch at float64 (zoo module or converter)."""

from __future__ import annotations

import numpy as np

from hspi_onnx.errors import UnsupportedError

SOURCE = "onnxref-fp64"
BATCH = 64


def to_float64(proto):
    """A copy of the ModelProto computing in float64 wherever it computed in float32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"fp64 conversion does not cover operators of domain {node.domain!r}")
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64), attr.t.name))
            elif attr.type == onnx.AttributeProto.GRAPH:
                raise UnsupportedError("fp64 conversion does not cover subgraphs (If, Loop, Scan)")
    return m


def onnx_float64(model, inputs: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The ONNX graph computed in float64 by the reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(to_float64(model.load()))
    name = model.spec.name
    parts = []
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        x = x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x
        parts.append(np.asarray(evaluator.run(None, {name: x})[0]))
    return np.concatenate(parts)


def compute_float64(model, inputs: np.ndarray) -> tuple[np.ndarray, str]:
    """(float64 outputs, what computed them)."""
    try:
        return onnx_float64(model, inputs).astype(np.float64), SOURCE
    except UnsupportedError:
        from hspi_onnx.graph.torch_module import torch_float64

        parts = [torch_float64(model, inputs[i:i + BATCH]) for i in range(0, len(inputs), BATCH)]
        return np.concatenate(parts).astype(np.float64), "pytorch-fp64"
