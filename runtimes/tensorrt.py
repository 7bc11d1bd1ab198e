"""NVIDIA TensorRT, from the ONNX file, on the first GPU.

Networks are strongly typed (the only kind TensorRT 11 builds; opted into on 10.x), so a
precision is the graph TensorRT parses, not a builder flag:

* fp32: the model as given, TF32 cleared; tf32: the same graph with the TF32 flag set;
* fp16, bf16 (where the GPU has it): the graph converted by :mod:`hspi_onnx.graph.lowprec`, inputs and
  outputs kept fp32;
* int8: explicit quantization, the symmetric int8 Q/DQ graph ONNX Runtime's static quantizer
  writes from the probe kind's calibration split (TensorRT refuses non-zero zero points).

fp8 is not offered: ONNX Runtime's float8 Q/DQ quantizer, the only one available here, gave a
ResNet whose top-1 agreed with fp32 on none of 64 probes and failed on the LM (docs/adapters.md).
Knob: batch size (one optimization profile per engine). Engines are cached under
``HSPI_CACHE/prepared/tensorrt/<version>/<model digest>/`` keyed by precision, batch size and
GPU. Device buffers are torch CUDA tensors, so a CUDA build of torch is required.

Status: the graphs each precision parses are built and checked on the CPU
(tests/test_lowprec.py); the engine build and run are exercised by ``tests/gpu`` on a GPU
machine, which no task writing this had.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.cache import atomic_write_bytes, cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.lowprec import HALF_PRECISIONS
from hspi_onnx.graph.prepared import Recipe, prepared_graph
from hspi_onnx.host import gpu_device, gpu_names
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter, Availability, batch_sizes, named_outputs

WORKSPACE = 1 << 30
ENGINE_FORMAT = "st1"  # strongly typed engines; part of the cache key


def network_graph(model: ModelInfo, platform: Platform) -> bytes:
    """The ONNX bytes TensorRT parses for ``platform``: the graph carries the precision.
    Reduced precisions are the core's prepared graphs, the same an ONNX Runtime platform of
    that precision (and Q/DQ recipe) gets."""
    if platform.precision in ("fp32", "tf32"):
        return model.load().SerializeToString()
    if platform.precision not in (*HALF_PRECISIONS, "int8"):
        raise UnsupportedError(f"tensorrt adapter has no precision {platform.precision!r}")
    recipe = (
        Recipe("int8", "qdq-sym", platform.knob["calib"])
        if platform.precision == "int8"
        else Recipe(platform.precision)
    )
    return prepared_graph(model, recipe)


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.ERROR)


class _TrtSession:
    def __init__(self, engine, model: ModelInfo) -> None:
        import torch

        import tensorrt as trt

        self.torch, self.model = torch, model
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []  # device buffers must live until the stream is done
        for name in self.inputs:
            x = torch.from_numpy(np.ascontiguousarray(feeds[name].astype(self.dtypes[name], copy=False))).cuda()
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            keep.append(x)
        outs = {}
        for name in self.outputs:  # TensorRT wants every output bound
            buf = torch.empty(
                tuple(self.context.get_tensor_shape(name)), dtype=_torch_dtype(self.dtypes[name]), device="cuda"
            )
            self.context.set_tensor_address(name, buf.data_ptr())
            outs[name] = buf
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise UnsupportedError("TensorRT failed to execute the engine")
        stream.synchronize()
        return named_outputs(self.model, [outs[name].cpu().numpy() for name in self.model.graph_output_names])


def _torch_dtype(dtype: np.dtype):
    import torch

    return {
        np.dtype("float32"): torch.float32,
        np.dtype("float16"): torch.float16,
        np.dtype("int32"): torch.int32,
        np.dtype("int64"): torch.int64,
        np.dtype("int8"): torch.int8,
        np.dtype("bool"): torch.bool,
    }[np.dtype(dtype)]


class TensorRtAdapter(Adapter):
    name = "tensorrt"
    distribution = "tensorrt"
    requires = ("tensorrt",)
    summary = "NVIDIA TensorRT from the ONNX file (strongly typed: fp32/tf32/fp16/bf16/int8 graphs)"

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

        precisions: list[tuple[str, dict]] = [("fp32", {}), ("tf32", {}), ("fp16", {})]
        precisions += [("bf16", {})] if torch.cuda.is_bf16_supported() else []
        precisions += [("int8", {"quant": "qdq-sym", "calib": probe_kind})]
        return self.grid(gpu_device(), precisions, bs=batch_sizes(model))

    def limitations(self) -> dict[str, str]:
        return {"fp8": "needs an FP8 Q/DQ graph; ONNX Runtime's float8 quantizer gave unusable ones (docs/adapters.md)"}

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import tensorrt as trt

        bs = int(platform.knob["bs"])
        engine_bytes = self._engine(model, platform, bs)
        runtime = trt.Runtime(_logger())
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise UnsupportedError(f"TensorRT could not load the engine built for {platform}")
        yield _TrtSession(engine, model)

    def _engine(self, model: ModelInfo, platform: Platform, bs: int) -> bytes:
        recipe = "-".join([platform.precision, f"bs{bs}", platform.device.split(":", 1)[1], ENGINE_FORMAT])
        path = cache_dir("prepared", "tensorrt", platform.version, model.sha256[:16]) / f"{recipe}.engine"
        if not path.exists():
            atomic_write_bytes(path, self._build(model, platform, bs))
        return path.read_bytes()

    def _build(self, model: ModelInfo, platform: Platform, bs: int) -> bytes:
        import tensorrt as trt

        onnx_bytes = network_graph(model, platform)
        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UnsupportedError(f"TensorRT cannot parse {model.name} ({platform.precision}): {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
        if platform.precision == "tf32":
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 layers mean fp32
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            if any(int(d) < 0 for d in tuple(t.shape)[1:]):
                raise UnsupportedError(
                    f"input {t.name!r} of {model.name} has a dynamic axis besides the batch; "
                    "engines here are built for static shapes"
                )
            shape = (bs, *[int(d) for d in tuple(t.shape)[1:]])
            profile.set_shape(t.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UnsupportedError(f"TensorRT could not build {model.name} for {platform}")
        return bytes(serialized)


def _network_flags(trt) -> int:
    """Strongly typed: always so on TensorRT 11 (where the flag is deprecated and ignored), an
    opt-in on 10.x, where it makes the graph's types binding as they are on 11."""
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
