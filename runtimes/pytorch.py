"""PyTorch on the CPU, eager mode.

Zoo models run from their own torch modules (``src=module``); any ONNX file, zoo exports
included, can also run through the ONNX-to-PyTorch converter (``src=onnx``). Precisions
fp32, bf16 and fp16 (weights and compute; outputs are returned in that dtype); channels-last
memory format on or off for image models; batch size; intra-op threads.

Measured knobs of CPU labels (:func:`cpu_kernels`, read from the process that runs them): ``aten``,
ATen's vectorisation level (``torch.backends.cpu.get_cpu_capability()``, which
``ATEN_CPU_CAPABILITY`` lowers); ``onednn``, the instruction-set limit oneDNN runs under
(``ONEDNN_MAX_CPU_ISA``, ``default`` when none); ``mkl``, MKL's conditional-numerical-
reproducibility branch (``MKL_CBWR``, read back from MKL; ``off`` by default, ``none`` without
MKL). Each of the three changed bits on this project's CPUs (docs/equivalence-cpu.md). Pinned in
prepare (:attr:`PyTorchAdapter.pins`): denormals not flushed, float32 matmul precision
``highest``, oneDNN enabled.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.torch_module import (
    InductorModule,
    build_torch_module,
    compile_unavailable,
    has_module,
    to_numpy,
    torch_dtype,
)
from hspi_onnx.host import capped_cpu_device, cpu_device, gpu_device, gpu_names, isa_cap_for, isa_caps
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import THREADS, Adapter, batch_sizes, named_outputs
from hspi_onnx.run.decode import GenerationSession, OnnxDecoder
from hspi_onnx.run.torch_cpu import cpu_kernels, pinned_cpu_settings, torch_threads

PRECISIONS = ("fp32", "bf16", "fp16")


def cuda_unavailable() -> str:
    """Why PyTorch cannot run on an NVIDIA GPU here, or "" when it can."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return ""


@contextlib.contextmanager
def cuda_flags(tf32: bool, benchmark: bool):
    """TF32 for matmul and cuDNN, and cuDNN autotuning, set for one session and restored after."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = saved


class _TorchSession:
    def __init__(self, module, model: ModelInfo, dtype, channels_last: bool, device: str = "cpu") -> None:
        self.module, self.model, self.dtype = module, model, dtype
        self.channels_last, self.device = channels_last, device

    def _tensor(self, x: np.ndarray):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if t.is_floating_point():
            t = t.to(self.dtype)
            if self.channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
        return t

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [self._tensor(feeds[name]) for name in self.model.input_names]
        with torch.inference_mode():
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return named_outputs(self.model, [to_numpy(t) for t in out])


def _generation_session(module, model: ModelInfo, dtype) -> GenerationSession:
    """The converted ONNX decoder under the shared decode loop; its cache stays a torch tensor
    in the compute dtype between steps."""
    import torch

    def run(ids, key, value):
        with torch.inference_mode():
            return module(torch.from_numpy(ids), key, value)

    def empty(shape):
        return torch.zeros(shape, dtype=dtype)

    spec = model.generation
    assert spec is not None  # only a language model (model.generation set) comes here
    return GenerationSession(OnnxDecoder(run, spec, empty, to_numpy), spec, native=module)


class PyTorchAdapter(Adapter):
    name = "pytorch"
    distribution = "torch"
    requires = ("torch",)
    summary = "PyTorch eager on the CPU (zoo modules, or any ONNX through the converter)"
    labelled = ("aten", "mkl", "onednn")
    pins = {"flush_denormal": False, "float32_matmul_precision": "highest", "mkldnn": True}

    def serves(self, model: ModelInfo) -> bool:
        return True  # graphs, and language models' decoders (through the converter) under the decode loop

    def _kernels(self, device: str) -> dict[str, str]:
        return cpu_kernels(self.environment(self.platform(device, "fp32")))

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        if model.generation is not None:  # the ONNX decoder through the converter, one sequence
            device = capped_cpu_device()
            precisions = [(p, {"mode": "eager", **self._kernels(device)}) for p in PRECISIONS]
            return self.grid(device, precisions, src=("onnx",), layout=("plain",), bs=(1,), threads=(1,))
        srcs = ("module", "onnx") if has_module(model) else ("onnx",)
        layouts = ("nchw", "nhwc") if any(i.kind == "image" for i in model.inputs) else ("plain",)
        device = capped_cpu_device()
        out = self.grid(
            device,
            [(p, {"mode": "eager", **self._kernels(device)}) for p in PRECISIONS],
            src=srcs,
            layout=layouts,
            bs=batch_sizes(model),
            threads=THREADS,
        )
        if not cuda_unavailable():
            import torch

            precisions = [("fp32", {"tf32": "off"}), ("fp32", {"tf32": "on"}), ("fp16", {})]
            precisions += [("bf16", {})] if torch.cuda.is_bf16_supported() else []
            out += self.grid(
                gpu_device(),
                [(p, {"mode": "eager", **k}) for p, k in precisions],
                src=srcs,
                layout=layouts,
                bs=batch_sizes(model),
                cudnn=("fixed", "benchmark"),
            )
        return out

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Instruction-set caps (eager) and torch.compile with inductor, where a C++ compiler
        is at hand: every precision, the default source and layout, the largest batch, 1 thread."""
        if model.generation is not None:
            return []
        src = "module" if has_module(model) else "onnx"
        layout = "nchw" if any(i.kind == "image" for i in model.inputs) else "plain"
        fixed = dict(src=(src,), layout=(layout,), bs=batch_sizes(model)[-1:], threads=(1,))
        out = [
            p
            for isa, _, _ in isa_caps()
            for p in self.grid(
                cpu_device(isa), [(p, {"mode": "eager", **self._kernels(cpu_device(isa))}) for p in PRECISIONS], **fixed
            )
        ]
        if not compile_unavailable():
            device = capped_cpu_device()
            out += self.grid(device, [(p, {"mode": "compile", **self._kernels(device)}) for p in PRECISIONS], **fixed)
        return out

    def measure(self, platform: Platform, session) -> dict[str, str]:
        import torch

        if platform.device_kind != "cpu":
            return {}
        return cpu_kernels() | {
            "threads": str(torch.get_num_threads()),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkldnn_enabled": str(torch.backends.mkldnn.enabled).lower(),
        }

    def limitations(self) -> dict[str, str]:
        out = {"cuda": cuda_unavailable()}
        if gpu_names() and out["cuda"]:
            out["cuda"] += f" (GPU present: {gpu_names()[0]})"
        out["mode=compile"] = compile_unavailable()
        return {k: v for k, v in out.items() if v}

    def environment(self, platform: Platform) -> dict[str, str]:
        cap = isa_cap_for(platform.device)
        return {"ATEN_CPU_CAPABILITY": cap[1], "ONEDNN_MAX_CPU_ISA": cap[2]} if cap else {}

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import torch

        knobs = platform.knob
        module = build_torch_module(model, knobs["src"], platform.precision).eval()
        channels_last = knobs.get("layout") == "nhwc"
        if platform.device.startswith("cuda"):
            reason = cuda_unavailable()
            if reason:
                raise UnsupportedError(f"cannot run {platform}: {reason}")
            module = module.to("cuda")
            if channels_last:
                module = module.to(memory_format=torch.channels_last)
            with cuda_flags(knobs.get("tf32") == "on", knobs.get("cudnn") == "benchmark"):
                yield _TorchSession(module, model, torch_dtype(platform.precision), channels_last, "cuda")
            return
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        with torch_threads(int(knobs["threads"])), pinned_cpu_settings(self.pins):
            if model.generation is not None:
                yield _generation_session(module, model, torch_dtype(platform.precision))
                return
            if knobs.get("mode") == "compile":
                reason = compile_unavailable()
                if reason:
                    raise UnsupportedError(f"torch.compile is unavailable here: {reason}")
                module = InductorModule(module)
            yield _TorchSession(module, model, torch_dtype(platform.precision), channels_last)
