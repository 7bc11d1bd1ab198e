"""llama.cpp through llama-cpp-python, on the CPU: the engine behind Ollama, LM Studio and many
self-hosted providers.

It runs language models (zoo models with ``hspi.generation``) from GGUF files that the model's
source module derives from the reference weights (``gguf_path``: F32 written from them, every
other type made by llama.cpp's own quantizer). Label segments: precision = the GGUF type
(``f32``, ``f16``, ``bf16``, ``q8_0``, ``q6_k``, ``q5_k_m``, ``q4_k_m``, ``q4_1``, ``q4_0``);
knobs ``fa`` (flash attention on/off, set explicitly, never ``auto``), ``kv`` (the KV cache's
type for keys and values: f16, q8_0, q4_0; quantized V needs flash attention), ``threads``,
``nbatch``/``ubatch`` (the logical and physical batch of the prompt), ``repack`` (llama.cpp's
extra buffer types, ``use_extra_bufts``: on lets ggml repack quantized weights into the layouts
of its AMX or AVX/NEON repack kernels, off is llama.cpp's ``--no-repack``), ``bs=1`` (one
sequence); measured knob ``ggml``: the CPU features ggml was built for and dispatches on
(``llama_print_system_info``), since its kernels are chosen from them.

The logits are read from llama.cpp's context for the last position after each decode
(``llama_get_logits_ith``), float32 as llama.cpp computes them; the shared decode loop
(:mod:`hspi_onnx.run.decode`) picks tokens and ranks the top k.

On a host whose ggml reports AMX_INT8 the quantized types run with ``repack=off`` only: there
llama.cpp's AMX buffer (``ggml_backend_amx_mul_mat``) segfaults on the first batch of two or more
tokens for every quantized type (measured with llama-cpp-python 0.3.36 on an Intel Xeon with
AMX; llama.cpp issue #20824), and a platform that kills its process is no reference.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.host import cpu_device
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter
from hspi_onnx.run.decode import GenerationSession, conversions

KV_TYPES = {"f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0"}
DEFAULT = {"threads": 1, "nbatch": 512, "ubatch": 512, "kv": "f16"}
UNQUANTIZED = ("F32", "F16", "BF16")  # the AMX buffer takes none of these: they run with it
# features of llama_print_system_info that pick ggml's CPU kernels, in label order
_FEATURES = (
    "AVX",
    "AVX2",
    "AVX_VNNI",
    "F16C",
    "FMA",
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AMX_INT8",
    "NEON",
    "ARM_FMA",
    "FP16_VA",
    "DOTPROD",
    "SVE",
    "MATMUL_INT8",
    "SME",
    "LLAMAFILE",
    "REPACK",
)


@functools.lru_cache(maxsize=1)
def ggml_features() -> str:
    """The label token of ggml's CPU kernels here: the features llama.cpp reports as on."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    on = {part.split("=")[0].strip() for part in info.replace("|", "\n").splitlines() if part.strip().endswith("= 1")}
    picked = [f.lower().replace("_", "") for f in _FEATURES if f in on]
    return "-".join(picked) or "generic"


def _amx_host() -> bool:
    return "amxint8" in ggml_features().split("-")


def default_repack(qtype: str) -> str:
    """``on`` (llama.cpp's default) unless the AMX buffer would take this type's weights."""
    return "off" if _amx_host() and qtype.upper() not in UNQUANTIZED else "on"


@contextlib.contextmanager
def _extra_bufts(on: bool):
    """``Llama`` takes no ``use_extra_bufts`` argument: its default model parameters are given
    that field for the duration of one load (worker processes load one model at a time)."""
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    original = lib.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = on
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


class _Quiet:
    """llama.cpp logs to stderr from C; silenced while loading (its errors still raise)."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)
        return self

    def __exit__(self, *exc):
        import os

        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)
        return False


class _Stepper:
    def __init__(self, llm, vocab: int) -> None:
        self.llm, self.vocab = llm, vocab

    def _logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.vocab,)).copy()

    def start(self, prompt: np.ndarray) -> np.ndarray:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self.llm.eval([int(t) for t in prompt])
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._logits()


class LlamaCppAdapter(Adapter):
    name = "llamacpp"
    distribution = "llama-cpp-python"
    requires = ("llama_cpp",)
    summary = "llama.cpp (llama-cpp-python) on the CPU: language models from GGUF files of every type"
    labelled = ("ggml",)

    def serves(self, model: ModelInfo) -> bool:
        return model.conversions() is not None  # runs the zoo's conversions, so only the zoo's export

    def _platform(self, qtype: str, fa: str, **knobs) -> Platform:
        values = {**DEFAULT, "repack": default_repack(qtype), **knobs}
        return self.platform(
            cpu_device(),
            qtype.lower(),
            fa=fa,
            kv=values["kv"],
            threads=values["threads"],
            nbatch=values["nbatch"],
            ubatch=values["ubatch"],
            repack=values["repack"],
            bs=1,
            ggml=ggml_features(),
        )

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        source = model.conversions()  # the GGUF types its source module makes
        return [self._platform(q, fa) for q in getattr(source, "GGUF_TYPES", ()) for fa in ("off", "on")]

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Quantized KV caches (with flash attention, which quantized V needs), two threads, and
        a small batch, on the types providers serve most; weights not repacked (``--no-repack``)
        where the default repacks them."""
        out = []
        for q in ("F16", "Q8_0", "Q4_K_M"):
            out += [self._platform(q, "on", kv=kv) for kv in ("q8_0", "q4_0")]
            out += [self._platform(q, fa, threads=2) for fa in ("off", "on")]
            out += [self._platform(q, fa, nbatch=8, ubatch=8) for fa in ("off", "on")]
        for q in ("Q8_0", "Q4_K_M", "Q4_0"):
            if default_repack(q) == "on":
                out += [self._platform(q, fa, repack="off") for fa in ("off", "on")]
        return out

    def measure(self, platform: Platform, session) -> dict[str, str]:
        llm = session.native
        params = llm.context_params
        return {
            "ggml": ggml_features(),
            "n_threads": str(params.n_threads),
            "n_threads_batch": str(params.n_threads_batch),
            "n_batch": str(params.n_batch),
            "n_ubatch": str(params.n_ubatch),
            "flash_attn_type": str(int(params.flash_attn_type)),
            "type_k": str(int(params.type_k)),
            "type_v": str(int(params.type_v)),
            "use_extra_bufts": str(bool(llm.model_params.use_extra_bufts)),
        }

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import llama_cpp

        spec, source = conversions(model, "llama.cpp")
        path = source.gguf_path(platform.precision.upper())
        k = platform.knob
        kv = getattr(llama_cpp, KV_TYPES[k["kv"]])
        with _Quiet(), _extra_bufts(k["repack"] == "on"):
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=spec.context,
                n_batch=int(k["nbatch"]),
                n_ubatch=int(k["ubatch"]),
                n_threads=int(k["threads"]),
                n_threads_batch=int(k["threads"]),
                flash_attn=k["fa"] == "on",
                type_k=kv,
                type_v=kv,
                seed=0,
                n_gpu_layers=0,
                logits_all=False,
                verbose=False,
            )
        want = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if k["fa"] == "on" else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if int(llm.context_params.flash_attn_type) != int(want):
            raise UnsupportedError(f"llama.cpp set flash attention type {int(llm.context_params.flash_attn_type)}")
        try:
            yield GenerationSession(_Stepper(llm, spec.vocab), spec, native=llm)
        finally:
            llm.close()
