"""ONNX Runtime on the CPU execution provider.

Precisions: fp32 (the model as given), fp16 (weights and compute converted, inputs and
outputs kept fp32), int8 with dynamic quantization, int8 with static QDQ quantization
calibrated on the calibration split of the probe kind. Knobs: graph optimization level,
batch size, intra-op threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from hspi_onnx.adapter import THREADS, Adapter, Availability, batch_sizes
from hspi_onnx.cache import atomic_write_bytes, cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.hostinfo import cpu_device, gpu_device, gpu_names
from hspi_onnx.model import ModelInfo
from hspi_onnx.platform import Platform

from .onnx_lowprec import HALF_PRECISIONS, to_half

OPT_LEVELS = ("disabled", "basic", "extended", "all")
CALIBRATION_PROBES = 32


def _qdq_recipes() -> dict:
    """Static Q/DQ recipes by the ``quant`` knob: ``qdq`` is the CPU's (uint8 activations with
    a zero point); ``qdq-sym`` is symmetric int8 on both sides, the only int8 Q/DQ TensorRT
    accepts (zero points must be 0), placed on the inputs of Conv, MatMul and Gemm only, not
    their outputs, as TensorRT's explicit quantization expects (quantizing every op's inputs
    and outputs put the LM's top-1 agreement with fp32 at 57.8% on 64 probes; this recipe
    gives 100%: bench/quant_graphs.py)."""
    from onnxruntime.quantization import QuantType

    return {
        "qdq": {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8},
        "qdq-sym": {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                    "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                      "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"]},
                    "op_types_to_quantize": ["Conv", "MatMul", "Gemm"]},
    }


class _OrtSession:
    def __init__(self, sess, input_name: str, output_name: str) -> None:
        self.sess, self.input_name, self.output_name = sess, input_name, output_name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output_name], {self.input_name: batch})[0]


GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _installed(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


class OnnxRuntimeAdapter(Adapter):
    name = "onnxruntime"
    requires = ("onnxruntime",)
    summary = "ONNX Runtime: CPU execution provider; CUDA and TensorRT providers with onnxruntime-gpu"

    @functools.cached_property
    def distribution(self) -> str:  # labels carry the version of whichever build is installed
        return "onnxruntime-gpu" if _installed("onnxruntime-gpu") else "onnxruntime"

    def check(self) -> Availability:
        if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
            return Availability(False, "both onnxruntime and onnxruntime-gpu are installed and share one module; "
                                       "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`")
        return Availability(True)

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        precisions = [
            ("fp32", {}), ("fp16", {}),
            ("int8", {"quant": "dynamic"}), ("int8", {"quant": "qdq", "calib": probe_kind}),
        ]
        out = self.grid(cpu_device(), precisions, opt=OPT_LEVELS, bs=batch_sizes(model), threads=THREADS)
        for ep in self.gpu_providers():
            gpu_precisions = [("fp32", {"ep": ep}), ("fp16", {"ep": ep})]
            out += self.grid(gpu_device(), gpu_precisions, opt=("disabled", "all"), bs=batch_sizes(model))
        return out

    def gpu_providers(self) -> list[str]:
        """GPU execution providers this build offers on a machine with an NVIDIA GPU."""
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        return [ep for ep, provider in GPU_PROVIDERS.items() if provider in have and gpu_names()]

    def limitations(self) -> dict[str, str]:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        out = {}
        for ep, provider in GPU_PROVIDERS.items():
            if provider not in have:
                out[f"ep={ep}"] = f"this onnxruntime build has no {provider} (install the [gpu] extra's onnxruntime-gpu)"
            elif not gpu_names():
                out[f"ep={ep}"] = "no NVIDIA GPU (nvidia-smi lists none)"
        return out

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[platform.knob["opt"]]
        opts.intra_op_num_threads = int(platform.knob.get("threads", 1))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        data = prepared_model(model, platform)
        providers = ["CPUExecutionProvider"]
        ep = platform.knob.get("ep")
        if ep:
            opts.intra_op_num_threads = 1
            if GPU_PROVIDERS[ep] not in ort.get_available_providers():
                raise UnsupportedError(f"onnxruntime has no {GPU_PROVIDERS[ep]} here")
            if ep == "tensorrt":
                trt = {"trt_fp16_enable": platform.precision == "fp16", "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(cache_dir("prepared", "onnxruntime-trt", platform.version, model.sha256[:16]))}
                providers = [(GPU_PROVIDERS[ep], trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                providers = [(GPU_PROVIDERS[ep], {"cudnn_conv_algo_search": "DEFAULT"}), "CPUExecutionProvider"]
        try:
            sess = ort.InferenceSession(data, opts, providers=providers)
        except Exception as exc:
            raise UnsupportedError(f"ONNX Runtime cannot load the model for {platform}: {_first_line(exc)}")
        yield _OrtSession(sess, model.spec.name, sess.get_outputs()[0].name)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def prepared_model(model: ModelInfo, platform: Platform) -> bytes:
    """The model converted to the platform's precision, cached by model digest and recipe.
    Every provider takes precision from the graph (TensorRT 11 builds strongly typed networks
    only), so the CUDA and TensorRT providers get the same fp16 graph as the CPU."""
    if platform.precision == "fp32":
        return model.load().SerializeToString()
    recipe = "-".join([platform.precision, platform.knob.get("quant", ""), platform.knob.get("calib", "")])
    path = cache_dir("prepared", "onnxruntime", platform.version, model.sha256[:16]) / f"{recipe.strip('-')}.onnx"
    if not path.exists():
        atomic_write_bytes(path, _convert(model, platform, path.parent))
    return path.read_bytes()


def _convert(model: ModelInfo, platform: Platform, workdir: Path) -> bytes:
    proto = model.load()
    if platform.precision in HALF_PRECISIONS:
        return to_half(proto, platform.precision).SerializeToString()
    if platform.precision != "int8":
        raise UnsupportedError(f"onnxruntime adapter has no precision {platform.precision!r}")
    from onnxruntime import quantization as q

    src = workdir / f".src-{os.getpid()}.onnx"
    dst = workdir / f".quant-{os.getpid()}.onnx"
    atomic_write_bytes(src, proto.SerializeToString())
    try:
        with _quiet():
            if platform.knob["quant"] == "dynamic":
                # uint8 weights: the CPU's ConvInteger kernel takes uint8 on both sides
                q.quantize_dynamic(src, dst, weight_type=q.QuantType.QUInt8)
            else:
                q.quantize_static(src, dst, _CalibrationReader(model, platform.knob["calib"]),
                                  quant_format=q.QuantFormat.QDQ, calibrate_method=q.CalibrationMethod.MinMax,
                                  **_qdq_recipes()[platform.knob["quant"]])
        return dst.read_bytes()
    except Exception as exc:
        raise UnsupportedError(f"int8 quantization failed for {model.name}: {_first_line(exc)}")
    finally:
        for p in (src, dst):
            p.unlink(missing_ok=True)


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

    def __init__(self, model: ModelInfo, kind: str) -> None:
        from hspi_onnx.probes import generate

        calib = generate(model.spec, kind, n=CALIBRATION_PROBES, seed=0, split="calib")
        bs = model.spec.fixed_batch or 8
        self._batches = iter(
            [{model.spec.name: calib.inputs[i:i + bs]} for i in range(0, len(calib), bs)
             if len(calib.inputs[i:i + bs]) == bs]
        )

    def get_next(self):
        return next(self._batches, None)
