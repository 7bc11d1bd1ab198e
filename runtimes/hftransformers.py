"""Hugging Face transformers on the CPU (PyTorch eager): the reference stack of most providers'
model cards, and what plain ``model.generate`` serves.

It runs language models (zoo models with ``hspi.generation``) from the Hugging Face folder
that the model's source module writes from the reference weights (``hf_folder``), as
``AutoModelForCausalLM`` with a ``DynamicCache``, computing only the last position's logits at
each step as ``generate`` does (``logits_to_keep=1``). Label segments: precision fp32, bf16 or
fp16 (weights and compute; the logits come back in that dtype); knobs ``attn`` (the attention
implementation: ``eager`` or ``sdpa``), ``threads``, ``bs=1``, and the measured PyTorch CPU
knobs ``aten``, ``mkl``, ``onednn`` of :mod:`hspi_onnx.run.torch_cpu`, with its pins.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.torch_module import to_numpy, torch_dtype
from hspi_onnx.host import capped_cpu_device
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter
from hspi_onnx.run.decode import GenerationSession, conversions
from hspi_onnx.run.torch_cpu import cpu_kernels, pinned_cpu_settings, torch_threads

PRECISIONS = ("fp32", "bf16", "fp16")
ATTENTION = ("eager", "sdpa")
PINS = {"flush_denormal": False, "float32_matmul_precision": "highest", "mkldnn": True}


class _Stepper:
    def __init__(self, model) -> None:
        self.model = model
        self.cache: object | None = None  # the sequence's DynamicCache, set by start()

    def _forward(self, ids) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return to_numpy(out.logits[0, -1])

    def start(self, prompt: np.ndarray) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        return self._forward(torch.from_numpy(np.ascontiguousarray(prompt, dtype=np.int64))[None])

    def step(self, token: int) -> np.ndarray:
        import torch

        return self._forward(torch.tensor([[token]], dtype=torch.int64))


class TransformersAdapter(Adapter):
    name = "transformers"
    distribution = "transformers"
    requires = ("transformers", "torch")
    summary = "Hugging Face transformers (PyTorch eager, CPU): language models, fp32/bf16/fp16 x eager/sdpa"
    labelled = ("aten", "mkl", "onednn")
    pins = PINS

    def serves(self, model: ModelInfo) -> bool:
        return model.generation is not None

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        device = capped_cpu_device()
        return self.grid(device, [(p, cpu_kernels()) for p in PRECISIONS], attn=ATTENTION, bs=(1,), threads=(1,))

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Two threads, every precision and attention."""
        device = capped_cpu_device()
        return self.grid(device, [(p, cpu_kernels()) for p in PRECISIONS], attn=ATTENTION, bs=(1,), threads=(2,))

    def measure(self, platform: Platform, session) -> dict[str, str]:
        import torch

        model = session.native
        return cpu_kernels() | {
            "threads": str(torch.get_num_threads()),
            "attn_implementation": str(model.config._attn_implementation),
            "dtype": str(model.dtype).removeprefix("torch."),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkldnn_enabled": str(torch.backends.mkldnn.enabled).lower(),
        }

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        spec, source = conversions(model, "transformers")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        lm = AutoModelForCausalLM.from_pretrained(
            str(source.hf_folder()),
            dtype=torch_dtype(platform.precision),
            attn_implementation=platform.knob["attn"],
            local_files_only=True,
        ).eval()
        if lm.config._attn_implementation != platform.knob["attn"]:
            raise UnsupportedError(f"transformers chose attention {lm.config._attn_implementation!r}")
        with torch_threads(int(platform.knob["threads"])), pinned_cpu_settings(self.pins):
            yield GenerationSession(_Stepper(lm), spec, native=lm)
