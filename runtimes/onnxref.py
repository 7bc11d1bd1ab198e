"""ONNX's reference evaluator (``onnx.reference``): the operators' specification in plain numpy.

A platform of its own — numpy's kernels and the reference implementations accumulate in
their own order — in fp32 (the model as given) and fp64 (every float tensor of the graph
widened to double: initializers, inputs, outputs, intermediate types, Cast targets and
constants). Knob: batch size. Measured knobs (numpy's state in the process that runs it,
:func:`hspi_onnx.run.kernels.numpy_state`): ``blas``, the BLAS library, its version and the
kernel it selected for this CPU (``OPENBLAS_CORETYPE`` changes it, and the bits with it), and
``numpy``, numpy's version and SIMD dispatch level (its own loops: exp, sums). Pinned: one BLAS
thread (:attr:`OnnxReferenceAdapter.pins`), set through threadpoolctl for the session's life:
with OpenBLAS's Haswell kernel one thread and two gave other bits, and a Ray worker starts with
``OMP_NUM_THREADS=1`` where a shell has none (docs/equivalence-cpu.md).
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.float64 import to_float64
from hspi_onnx.host import cpu_device
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter, batch_sizes, named_outputs
from hspi_onnx.run.kernels import LabelMismatch, numpy_state

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
    labelled = ("blas", "numpy")
    pins = {"blas_threads": 1}

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        state = numpy_state()
        measured = {k: state[k] for k in self.labelled}
        return self.grid(cpu_device(), [(p, measured) for p in PRECISIONS], bs=batch_sizes(model))

    def measure(self, platform: Platform, session) -> dict[str, str]:
        state = numpy_state()
        if state["blas"] != "none" and state["blas_threads"] != str(self.pins["blas_threads"]):
            raise LabelMismatch(
                f"{platform}: numpy's BLAS runs {state['blas_threads']} threads, the adapter pins "
                f"{self.pins['blas_threads']}"
            )
        return state

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        from hspi_onnx.graph.refops import reference_evaluator

        if platform.precision not in PRECISIONS:
            raise UnsupportedError(f"onnxref adapter has no precision {platform.precision!r}")
        proto = model.load()
        dtype: type[np.floating] = np.float32
        if platform.precision == "fp64":
            proto, dtype = to_float64(proto), np.float64
        try:
            evaluator = reference_evaluator(proto)
        except Exception as exc:  # the evaluator raises plain exceptions for unsupported ops
            raise UnsupportedError(
                f"the ONNX reference evaluator cannot load {model.name}: "
                f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
            )
        import threadpoolctl

        with threadpoolctl.threadpool_limits(limits=int(self.pins["blas_threads"]), user_api="blas"):
            yield _RefSession(evaluator, model, dtype)
