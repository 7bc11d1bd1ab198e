"""ONNX Runtime on the CPU execution provider.

Precisions: fp32 (the model as given), fp16 (weights and compute converted, inputs and
outputs kept fp32), int8 with dynamic quantization, int8 with static QDQ quantization
calibrated on the calibration split of the probe kind. Knobs: graph optimization level,
batch size, intra-op threads.

ONNX Runtime's CPU kernels (MLAS) dispatch on the CPU's instruction set with no switch to
lower it, so the device segment's ISA and CPU model stand for them; no environment variable of
the knob survey moved its bits (docs/equivalence-cpu.md). Pinned in every session
(:attr:`OnnxRuntimeAdapter.pins`): sequential execution, one inter-op thread, no spinning,
denormals kept (``session.set_denormal_as_zero`` = 0, which flushing would change).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from hspi_onnx.cache import cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.prepared import INT4_RECIPES, Recipe, first_line, prepared_source
from hspi_onnx.host import cpu_device, dist_version, gpu_device, gpu_names
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import THREADS, Adapter, Availability, batch_sizes, named_outputs
from hspi_onnx.run.decode import GenerationSession, OnnxDecoder

OPT_LEVELS = ("disabled", "basic", "extended", "all")


class _OrtSession:
    def __init__(self, sess, model: ModelInfo) -> None:
        self.sess, self.model = sess, model
        self.native = sess  # what measure() reads, as under a GenerationSession

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return named_outputs(self.model, self.sess.run(self.model.graph_output_names, feeds))


GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntimeAdapter(Adapter):
    name = "onnxruntime"
    requires = ("onnxruntime",)
    summary = "ONNX Runtime: CPU execution provider; CUDA and TensorRT providers with onnxruntime-gpu"
    pins = {"session.set_denormal_as_zero": "0", "session.intra_op.allow_spinning": "0", "inter_op_threads": 1}

    # labels carry the version of whichever build is installed
    @functools.cached_property
    def distribution(self) -> str:  # type: ignore[override]  # cached_property is writable; mypy calls it read-only
        return "onnxruntime-gpu" if dist_version("onnxruntime-gpu") else "onnxruntime"

    def check(self) -> Availability:
        if dist_version("onnxruntime") and dist_version("onnxruntime-gpu"):
            return Availability(
                False,
                "both onnxruntime and onnxruntime-gpu are installed and share one module; "
                "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`",
            )
        return Availability(True)

    def serves(self, model: ModelInfo) -> bool:
        return True  # graphs, and language models' decoders through the shared decode loop

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        if model.generation is not None:  # one sequence at a time, through the decode loop
            precisions = [("fp32", {}), ("int8", {"quant": "dynamic"})]
            out = self.grid(cpu_device(), precisions, opt=OPT_LEVELS, bs=(1,), threads=(1,))
            # reduced-precision decoders as served: fp16, and 4-bit weights at both accuracy levels
            reduced: list[tuple[str, dict]] = [("fp16", {})] + [("int4", {"quant": q}) for q in INT4_RECIPES]
            return out + self.grid(cpu_device(), reduced, opt=("all",), bs=(1,), threads=(1,))
        precisions = [
            ("fp32", {}),
            ("fp16", {}),
            ("int8", {"quant": "dynamic"}),
            ("int8", {"quant": "qdq", "calib": probe_kind}),
        ]
        out = self.grid(cpu_device(), precisions, opt=OPT_LEVELS, bs=batch_sizes(model), threads=THREADS)
        for ep in self.gpu_providers():
            gpu_precisions = [("fp32", {"ep": ep}), ("fp16", {"ep": ep})]
            out += self.grid(gpu_device(), gpu_precisions, opt=("disabled", "all"), bs=batch_sizes(model))
        return out

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """A language model's decoders with two intra-op threads (fully optimized graphs)."""
        if model.generation is None:
            return []
        precisions = [("fp32", {}), ("int8", {"quant": "dynamic"}), ("fp16", {}), ("int4", {"quant": "mnb-acc4"})]
        return self.grid(cpu_device(), precisions, opt=("all",), bs=(1,), threads=(2,))

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
                out[f"ep={ep}"] = (
                    f"this onnxruntime build has no {provider} (install the [gpu] extra's onnxruntime-gpu)"
                )
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
        opts.inter_op_num_threads = int(self.pins["inter_op_threads"])
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        for key, value in self.pins.items():
            if key.startswith("session."):
                opts.add_session_config_entry(key, str(value))
        opts.log_severity_level = 3
        data = prepared_source(model, recipe_of(platform))
        providers: list[str | tuple[str, dict]] = ["CPUExecutionProvider"]  # names, or (name, options)
        ep = platform.knob.get("ep")
        if ep:
            opts.intra_op_num_threads = 1
            if GPU_PROVIDERS[ep] not in ort.get_available_providers():
                raise UnsupportedError(f"onnxruntime has no {GPU_PROVIDERS[ep]} here")
            if ep == "tensorrt":
                trt = {
                    "trt_fp16_enable": platform.precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(
                        cache_dir("prepared", "onnxruntime-trt", platform.version, model.sha256[:16])
                    ),
                }
                providers = [(GPU_PROVIDERS[ep], trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                providers = [(GPU_PROVIDERS[ep], {"cudnn_conv_algo_search": "DEFAULT"}), "CPUExecutionProvider"]
        try:
            sess = ort.InferenceSession(data, opts, providers=providers)
        except Exception as exc:
            raise UnsupportedError(f"ONNX Runtime cannot load the model for {platform}: {first_line(exc)}")
        if model.generation is not None:
            yield _generation_session(sess, model)
        else:
            yield _OrtSession(sess, model)

    def measure(self, platform: Platform, session) -> dict[str, str]:
        sess = session.native
        opts = sess.get_session_options()
        return {
            "intra_op_threads": str(opts.intra_op_num_threads),
            "inter_op_threads": str(opts.inter_op_num_threads),
            "providers": ",".join(sess.get_providers()),
            **{k: str(opts.get_session_config_entry(k)) for k in self.pins if k.startswith("session.")},
        }


def _generation_session(sess, model: ModelInfo) -> GenerationSession:
    """A language model's decoder under the shared decode loop; the cache stays float32 at the
    graph's inputs and outputs whatever the precision inside."""
    spec = model.generation
    assert spec is not None  # only a language model (model.generation set) comes here
    names = ["logits", "present_key", "present_value"]

    def run(ids, key, value):
        return sess.run(names, {"input_ids": ids, "past_key": key, "past_value": value})

    def empty(shape):
        return np.zeros(shape, dtype=np.float32)

    return GenerationSession(OnnxDecoder(run, spec, empty), spec, native=sess)


def recipe_of(platform: Platform) -> Recipe:
    """The prepared graph a platform runs: its precision and int8 recipe."""
    if platform.precision not in ("fp32", "fp16", "bf16", "int8", "int4"):
        raise UnsupportedError(f"onnxruntime adapter has no precision {platform.precision!r}")
    return Recipe(platform.precision, platform.knob.get("quant", ""), platform.knob.get("calib", ""))
