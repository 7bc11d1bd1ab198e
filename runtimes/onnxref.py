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

from hspi_onnx.run.adapter import Adapter, batch_sizes, named_outputs
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.host import cpu_device
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.graph.float64 import to_float64
from hspi_onnx.labels import Platform

PRECISIONS = ("fp32", "fp64")


class _RefSession:
    def __init__(self, evaluator, model: ModelInfo, dtype) -> None:
        self.evaluator, self.model, self.dtype = evaluator, model, dtype

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v.astype(self.dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in feeds.items()}
        return named_outputs(self.model, self.evaluator.run(None, feeds))


class OnnxReferenceAdapter(Adapter):
    name = "onnxref"
    distribution = "onnx"
    requires = ("onnx.reference",)
    summary = "ONNX reference evaluator (numpy), fp32 and fp64"

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        return self.grid(cpu_device(), [(p, {}) for p in PRECISIONS], bs=batch_sizes(model))

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        from hspi_onnx.graph.refops import reference_evaluator

        if platform.precision not in PRECISIONS:
            raise UnsupportedError(f"onnxref adapter has no precision {platform.precision!r}")
        proto = model.load()
        dtype = np.float32
        if platform.precision == "fp64":
            proto, dtype = to_float64(proto), np.float64
        try:
            evaluator = reference_evaluator(proto)
        except Exception as exc:  # the evaluator raises plain exceptions for unsupported ops
            raise UnsupportedError(f"the ONNX reference evaluator cannot load {model.name}: "
                                   f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}")
        yield _RefSession(evaluator, model, dtype)
