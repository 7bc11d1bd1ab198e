"""NVIDIA TensorRT, from the ONNX file, on the first GPU.

Precisions are builder settings: fp32 (TF32 cleared), tf32, fp16, bf16 (where the GPU has it),
int8 (explicit quantization: the ONNX Runtime QDQ model calibrated on the probe kind's
calibration split, built with the INT8 flag). fp8 is not offered: it needs an FP8 Q/DQ model,
which hspi's quantizer does not write. Knob: batch size (one optimization profile per engine).
Engines are cached under ``HSPI_CACHE/prepared/tensorrt/<version>/<model digest>/`` keyed by
precision, batch size and GPU. Device buffers are torch CUDA tensors, so a CUDA build of torch
is required.

Status: written without a GPU at hand (no device was lent to the task that wrote it); it is
exercised by ``tests/gpu`` on a GPU machine.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.adapter import Adapter, Availability, batch_sizes
from hspi_onnx.cache import atomic_write_bytes, cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.hostinfo import gpu_device, gpu_names
from hspi_onnx.model import ModelInfo
from hspi_onnx.platform import Platform

FLAGS = {"fp32": (), "tf32": ("TF32",), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8",)}
WORKSPACE = 1 << 30


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.ERROR)


class _TrtSession:
    def __init__(self, engine, batch: int) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.batch = batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        name = self.inputs[0]
        x = torch.from_numpy(np.ascontiguousarray(batch.astype(self.dtypes[name], copy=False))).cuda()
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        out_name = self.outputs[0]
        shape = tuple(self.context.get_tensor_shape(out_name))
        out = torch.empty(shape, dtype=_torch_dtype(self.dtypes[out_name]), device="cuda")
        self.context.set_tensor_address(out_name, out.data_ptr())
        for extra in self.outputs[1:]:  # TensorRT wants every output bound
            buf = torch.empty(tuple(self.context.get_tensor_shape(extra)), dtype=_torch_dtype(self.dtypes[extra]), device="cuda")
            self.context.set_tensor_address(extra, buf.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise UnsupportedError("TensorRT failed to execute the engine")
        stream.synchronize()
        return out.cpu().numpy()


def _torch_dtype(dtype: np.dtype):
    import torch

    return {np.dtype("float32"): torch.float32, np.dtype("float16"): torch.float16,
            np.dtype("int32"): torch.int32, np.dtype("int64"): torch.int64, np.dtype("int8"): torch.int8,
            np.dtype("bool"): torch.bool}[np.dtype(dtype)]


class TensorRtAdapter(Adapter):
    name = "tensorrt"
    distribution = "tensorrt"
    requires = ("tensorrt",)
    summary = "NVIDIA TensorRT from the ONNX file (builder precisions fp32/tf32/fp16/bf16/int8)"

    def check(self) -> Availability:
        if not gpu_names():
            return Availability(False, "no NVIDIA GPU (nvidia-smi lists none)")
        try:
            import torch
        except Exception as exc:  # a broken torch install
            return Availability(False, f"cannot import torch: {type(exc).__name__}")
        if torch.version.cuda is None or not torch.cuda.is_available():
            return Availability(False, "TensorRT buffers are torch CUDA tensors; this torch has no CUDA device")
        return Availability(True)

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        import torch

        precisions = [("fp32", {}), ("tf32", {}), ("fp16", {})]
        precisions += [("bf16", {})] if torch.cuda.is_bf16_supported() else []
        precisions += [("int8", {"quant": "qdq", "calib": probe_kind})]
        return self.grid(gpu_device(), precisions, bs=batch_sizes(model))

    def limitations(self) -> dict[str, str]:
        return {"fp8": "needs an FP8 Q/DQ model; hspi's quantizer writes int8 Q/DQ only"}

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import tensorrt as trt

        bs = int(platform.knob["bs"])
        engine_bytes = self._engine(model, platform, bs)
        runtime = trt.Runtime(_logger())
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise UnsupportedError(f"TensorRT could not load the engine built for {platform}")
        yield _TrtSession(engine, bs)

    def _engine(self, model: ModelInfo, platform: Platform, bs: int) -> bytes:
        recipe = "-".join([platform.precision, f"bs{bs}", platform.device.split(":", 1)[1]])
        path = cache_dir("prepared", "tensorrt", platform.version, model.sha256[:16]) / f"{recipe}.engine"
        if not path.exists():
            atomic_write_bytes(path, self._build(model, platform, bs))
        return path.read_bytes()

    def _build(self, model: ModelInfo, platform: Platform, bs: int) -> bytes:
        import tensorrt as trt

        if platform.precision == "int8":
            from hspi_onnx.hostinfo import cpu_device

            from .onnxrt import OnnxRuntimeAdapter, prepared_model

            ort = OnnxRuntimeAdapter()
            qdq = ort.platform(cpu_device(), "int8", quant="qdq", calib=platform.knob["calib"], opt="all", bs=bs, threads=1)
            onnx_bytes = prepared_model(model, qdq)
        else:
            onnx_bytes = model.load().SerializeToString()
        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UnsupportedError(f"TensorRT cannot parse {model.name}: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 means fp32
        for flag in FLAGS[platform.precision]:
            if not hasattr(trt.BuilderFlag, flag):
                raise UnsupportedError(f"TensorRT {trt.__version__} has no builder flag {flag}")
            config.set_flag(getattr(trt.BuilderFlag, flag))
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            shape = (bs, *[int(d) for d in tuple(t.shape)[1:]])
            profile.set_shape(t.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UnsupportedError(f"TensorRT could not build {model.name} for {platform}")
        return bytes(serialized)
