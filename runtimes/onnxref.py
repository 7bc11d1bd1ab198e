"""ONNX's reference evaluator (``onnx.reference``): the operators' specification in plain numpy.

A platform of its own — numpy's kernels and the reference implementations accumulate in
their own order — in fp32 (the model as given) and fp64 (every float tensor of the graph
widened to double: initializers, inputs, outputs, intermediate types, Cast targets and
constants). Knob: batch size. There is no thread knob: the evaluator runs one operator at a
time and numpy's BLAS calls are not configured per run.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.adapter import Adapter, batch_sizes
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.hostinfo import cpu_device
from hspi_onnx.model import ModelInfo
from hspi_onnx.platform import Platform

PRECISIONS = ("fp32", "fp64")


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


class _RefSession:
    def __init__(self, evaluator, input_name: str, dtype) -> None:
        self.evaluator, self.input_name, self.dtype = evaluator, input_name, dtype

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(self.dtype) if np.issubdtype(batch.dtype, np.floating) else batch
        return np.asarray(self.evaluator.run(None, {self.input_name: x})[0])


class OnnxReferenceAdapter(Adapter):
    name = "onnxref"
    distribution = "onnx"
    requires = ("onnx.reference",)
    summary = "ONNX reference evaluator (numpy), fp32 and fp64"

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        return self.grid(cpu_device(), [(p, {}) for p in PRECISIONS], bs=batch_sizes(model))

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        from onnx.reference import ReferenceEvaluator

        if platform.precision not in PRECISIONS:
            raise UnsupportedError(f"onnxref adapter has no precision {platform.precision!r}")
        proto = model.load()
        dtype = np.float32
        if platform.precision == "fp64":
            proto, dtype = to_float64(proto), np.float64
        try:
            evaluator = ReferenceEvaluator(proto)
        except Exception as exc:  # the evaluator raises plain exceptions for unsupported ops
            raise UnsupportedError(f"the ONNX reference evaluator cannot load {model.name}: "
                                   f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}")
        yield _RefSession(evaluator, model.spec.name, dtype)


def float64_reference(model: ModelInfo, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """The ONNX graph computed in float64 by the reference evaluator (the features' reference)."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(to_float64(model.load()))
    session = _RefSession(evaluator, model.spec.name, np.float64)
    return np.concatenate([session.run(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
