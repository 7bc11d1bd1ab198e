"""Reduced-precision graphs of a model, cached by model digest and recipe: what runtimes that
take precision from the graph itself run (ONNX Runtime's fp16 and int8 platforms, its CUDA and
TensorRT providers, strongly typed TensorRT 11 networks).

A recipe is a precision plus, for int8, the quantization (``dynamic``; ``qdq``, uint8
activations with a zero point, ONNX Runtime CPU's; ``qdq-sym``, symmetric int8 on both sides
on the inputs of Conv/MatMul/Gemm only, the Q/DQ TensorRT accepts) and the probe kind whose
calibration split calibrates static quantization. The quantizer is ONNX Runtime's, so the
cache is keyed by its version too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx.cache import atomic_write_bytes, cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.lowprec import HALF_PRECISIONS, to_half
from hspi_onnx.inputs.onnxfile import sha256_file

CALIBRATION_PROBES = 32
QUANT_RECIPES = ("dynamic", "qdq", "qdq-sym")
# 4-bit weights (ONNX Runtime's MatMulNBits: blocks of 32, symmetric), by the accuracy level the
# node carries: 0 computes with float activations, 4 quantizes activations to int8 (what ONNX
# Runtime GenAI's CPU models use)
INT4_RECIPES = {"mnb-acc0": 0, "mnb-acc4": 4}


@dataclass(frozen=True)
class Recipe:
    precision: str  # fp32, fp16, bf16, int8
    quant: str = ""  # int8 only: one of QUANT_RECIPES
    calib: str = ""  # static int8 only: the probe kind of the calibration split

    def key(self) -> str:
        return "-".join(p for p in (self.precision, self.quant, self.calib) if p)


def _qdq_recipes() -> dict:
    """Static Q/DQ settings by recipe: ``qdq`` is the CPU's (uint8 activations with a zero
    point); ``qdq-sym`` is symmetric int8 on both sides, the only int8 Q/DQ TensorRT accepts
    (zero points must be 0), placed on the inputs of Conv, MatMul and Gemm only, not their
    outputs, as TensorRT's explicit quantization expects (quantizing every op's inputs and
    outputs put the LM's top-1 agreement with fp32 at 57.8% on 64 probes; this recipe gives
    100%: bench/quant_graphs.py)."""
    from onnxruntime.quantization import QuantType

    return {
        "qdq": {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8},
        "qdq-sym": {
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"],
            },
            "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
        },
    }


def _int4(proto, accuracy_level: int, name: str) -> bytes:
    """Every MatMul with constant weights as 4-bit MatMulNBits (ONNX Runtime's quantizer)."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        with _quiet():
            quantizer = MatMulNBitsQuantizer(
                proto, bits=4, block_size=32, is_symmetric=True, accuracy_level=accuracy_level
            )
            quantizer.process()
        out = quantizer.model.model
    except Exception as exc:  # a missing onnx_ir or a graph the quantizer cannot take
        raise UnsupportedError(f"int4 quantization failed for {name}: {first_line(exc)}")
    if not any(n.op_type == "MatMulNBits" for n in out.graph.node):
        raise UnsupportedError(f"int4 quantization left no MatMul of {name} quantized (no constant weights)")
    return out.SerializeToString()


def _quantizer_version() -> str:
    from hspi_onnx.host import dist_version

    return (dist_version("onnxruntime") or dist_version("onnxruntime-gpu") or "0").replace("+", "-")


def prepared_source(model, recipe: Recipe) -> str | bytes:
    """What a runtime that reads ONNX files or bytes loads for ``recipe``: for fp32 the model's own
    file when it still hashes to the model's sha256 (no parse, check and re-serialization of a
    large model in the worker: the file was checked when the model was opened), else the bytes
    of :func:`prepared_graph`."""
    if recipe.precision == "fp32" and sha256_file(model.path) == model.sha256:
        return str(model.path)
    return prepared_graph(model, recipe)


def prepared_graph(model, recipe: Recipe) -> bytes:
    """The serialized graph of ``model`` for ``recipe`` (the model itself for fp32)."""
    if recipe.precision == "fp32":
        return model.load().SerializeToString()
    path = cache_dir("prepared", "graphs", _quantizer_version(), model.sha256[:16]) / f"{recipe.key()}.onnx"
    if not path.exists():
        atomic_write_bytes(path, _convert(model, recipe, path.parent))
    return path.read_bytes()


def _convert(model, recipe: Recipe, workdir: Path) -> bytes:
    proto = model.load()
    if recipe.precision in HALF_PRECISIONS:
        return to_half(proto, recipe.precision).SerializeToString()
    if recipe.precision == "int4" and recipe.quant in INT4_RECIPES:
        return _int4(proto, INT4_RECIPES[recipe.quant], model.name)
    if recipe.precision != "int8" or recipe.quant not in QUANT_RECIPES:
        raise UnsupportedError(f"no prepared graph for {recipe.key()!r}")
    from onnxruntime import quantization as q

    src = workdir / f".src-{os.getpid()}.onnx"
    dst = workdir / f".quant-{os.getpid()}.onnx"
    atomic_write_bytes(src, proto.SerializeToString())
    try:
        with _quiet():
            if recipe.quant == "dynamic":
                # uint8 weights: the CPU's ConvInteger kernel takes uint8 on both sides
                q.quantize_dynamic(src, dst, weight_type=q.QuantType.QUInt8)
            else:
                q.quantize_static(
                    src,
                    dst,
                    _CalibrationReader(model, recipe.calib),
                    quant_format=q.QuantFormat.QDQ,
                    calibrate_method=q.CalibrationMethod.MinMax,
                    **_qdq_recipes()[recipe.quant],
                )
        return dst.read_bytes()
    except Exception as exc:
        raise UnsupportedError(f"int8 quantization failed for {model.name}: {first_line(exc)}")
    finally:
        for p in (src, dst):
            p.unlink(missing_ok=True)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs advice to the root logger and warns; keep the CLI clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


class _CalibrationReader:
    """Feeds the calibration split (disjoint from the probes) to ONNX Runtime's calibrator."""

    def __init__(self, model, kind: str) -> None:
        from hspi_onnx.inputs.probes import generate

        calib = generate(model, kind, n=CALIBRATION_PROBES, seed=0, split="calib")
        bs = model.fixed_batch or 8
        self._batches = iter([calib.batch(np.arange(i, i + bs)) for i in range(0, len(calib) - bs + 1, bs)])

    def get_next(self):
        return next(self._batches, None)
