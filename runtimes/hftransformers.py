"""Hugging Face transformers on the CPU (PyTorch eager): the reference stack of most providers'
model cards, and what plain ``model.generate`` serves.

It runs language models (zoo models with ``hspi.generation``) from the Hugging Face folder
that the model's source module writes from the reference weights (``hf_folder``), as
``AutoModelForCausalLM`` with a ``DynamicCache``, computing only the last position's logits at
each step as ``generate`` does (``logits_to_keep=1``). Label segments: precision fp32, bf16 or
fp16 (weights and compute; the logits come back in that dtype); knobs ``attn`` (the attention
implementation: ``eager`` or ``sdpa``), ``threads``, ``bs=1``, and the measured PyTorch CPU
knobs ``aten``, ``mkl``, ``onednn`` of :mod:`hspi_onnx.run.torch_cpu`, with its pins.

Weight quantizers of the HSPI paper's comparison that run on the CPU (:data:`QUANTIZERS`)
quantize the fp32 model as loaded, sdpa attention, activations in fp32: optimum-quanto int8/int4
and torchao int8 (weight-only, and dynamic int8 activations) through transformers' own
``QuantoConfig``/``TorchAoConfig``; HQQ through its own library (transformers 5 no longer
quantizes with HQQ), its PyTorch backend. Precision int8 or int4, knob ``quant`` the recipe and a
knob named for the quantizer's distribution holding its version; ``lm_head`` stays fp32 in all, as
transformers leaves it. Not here: torchao int4 (its CPU layouts are gone from torchao 0.18, and
the plain one needs mslk, which has no CPU build), bitsandbytes (GPU).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.torch_module import to_numpy, torch_dtype
from hspi_onnx.host import capped_cpu_device, dist_version
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter
from hspi_onnx.run.decode import GenerationSession, conversions
from hspi_onnx.run.torch_cpu import cpu_kernels, pinned_cpu_settings, torch_threads

PRECISIONS = ("fp32", "bf16", "fp16")
ATTENTION = ("eager", "sdpa")
PINS = {"flush_denormal": False, "float32_matmul_precision": "highest", "mkldnn": True}
# weight quantizer recipe -> (precision, the distribution whose version the label holds, knob name)
QUANTIZERS = {
    "quanto-int8": ("int8", "optimum-quanto", "quanto"),
    "quanto-int4": ("int4", "optimum-quanto", "quanto"),
    "torchao-int8wo": ("int8", "torchao", "torchao"),
    "torchao-int8da": ("int8", "torchao", "torchao"),
    "hqq-4b-g64": ("int4", "hqq", "hqq"),
    "hqq-8b-g64": ("int8", "hqq", "hqq"),
}
EXTRA_QUANTIZERS = ("hqq-8b-g64",)  # slow on the CPU (3.6 s for 8 tokens against 0.6 s)


class _Stepper:
    def __init__(self, model, quantized: bool = False) -> None:
        self.model = model
        self.cache: object | None = None  # the sequence's DynamicCache, set by start()
        # quanto's int4 weights cannot be used under inference_mode ("Cannot set version_counter
        # for inference tensor"): quantized models run under no_grad, the same kernels
        self.quantized = quantized

    def _forward(self, ids) -> np.ndarray:
        import torch

        with torch.no_grad() if self.quantized else torch.inference_mode():
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
        return model.conversions() is not None  # runs the zoo's conversions, so only the zoo's export

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        device = capped_cpu_device()
        plain = self.grid(device, [(p, cpu_kernels()) for p in PRECISIONS], attn=ATTENTION, bs=(1,), threads=(1,))
        return plain + self._quantized([q for q in QUANTIZERS if q not in EXTRA_QUANTIZERS])

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Two threads, every precision and attention; the slow quantizers."""
        device = capped_cpu_device()
        plain = self.grid(device, [(p, cpu_kernels()) for p in PRECISIONS], attn=ATTENTION, bs=(1,), threads=(2,))
        return plain + self._quantized(list(EXTRA_QUANTIZERS))

    def _quantized(self, recipes: list[str]) -> list[Platform]:
        """fp32 models with quantized weights, sdpa attention, for each installed quantizer."""
        out = []
        for recipe in recipes:
            precision, dist, knob = QUANTIZERS[recipe]
            version = dist_version(dist)
            if version:
                fixed = cpu_kernels() | {"quant": recipe, knob: version}
                out += self.grid(capped_cpu_device(), [(precision, fixed)], attn=("sdpa",), bs=(1,), threads=(1,))
        return out

    def limitations(self) -> dict[str, str]:
        missing = sorted({dist for _, dist, _ in QUANTIZERS.values() if not dist_version(dist)})
        return {f"quant={dist}": "not installed (the llm extra installs it)" for dist in missing}

    def measure(self, platform: Platform, session) -> dict[str, str]:
        import torch

        model = session.native
        linear = model.model.layers[0].mlp.down_proj
        return cpu_kernels() | {
            "linear": f"{type(linear).__name__}/{type(getattr(linear, 'weight', None)).__name__}",
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
        recipe = platform.knob.get("quant")
        if recipe is not None:
            _check_quantizer(platform, recipe)
        with torch_threads(int(platform.knob["threads"])), pinned_cpu_settings(self.pins):
            lm = AutoModelForCausalLM.from_pretrained(
                str(source.hf_folder()),
                dtype=torch_dtype("fp32" if recipe else platform.precision),
                attn_implementation=platform.knob["attn"],
                local_files_only=True,
                **_quantization_config(recipe),
            ).eval()
            if lm.config._attn_implementation != platform.knob["attn"]:
                raise UnsupportedError(f"transformers chose attention {lm.config._attn_implementation!r}")
            if recipe is not None and recipe.startswith("hqq-"):
                _hqq(lm, recipe)
            yield GenerationSession(_Stepper(lm, quantized=recipe is not None), spec, native=lm)


def _check_quantizer(platform: Platform, recipe: str) -> None:
    if recipe not in QUANTIZERS or QUANTIZERS[recipe][0] != platform.precision:
        raise UnsupportedError(f"transformers adapter has no {platform.precision} quantizer {recipe!r}")
    _, dist, knob = QUANTIZERS[recipe]
    version = dist_version(dist)
    if version != platform.knob.get(knob):
        raise UnsupportedError(f"{platform} needs {dist} {platform.knob.get(knob)}, this environment has {version}")


def _quantization_config(recipe: str | None) -> dict:
    """transformers' quantization_config for the quanto and torchao recipes (none for the others)."""
    if recipe is None or recipe.startswith("hqq-"):
        return {}
    if recipe.startswith("quanto-"):
        from transformers import QuantoConfig

        return {"quantization_config": QuantoConfig(weights=recipe.removeprefix("quanto-"))}
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it warns about its CUDA kernels on import
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    config = Int8WeightOnlyConfig() if recipe == "torchao-int8wo" else Int8DynamicActivationInt8WeightConfig()
    return {"quantization_config": TorchAoConfig(quant_type=config)}


def _hqq(lm, recipe: str) -> None:
    """HQQ's linear layers in place of the decoder's (not lm_head), computing in fp32 on the CPU
    with HQQ's PyTorch backend."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear
    from hqq.models.hf.base import AutoHQQHFModel

    bits = int(recipe.removeprefix("hqq-").split("b-")[0])
    HQQLinear.set_backend(HQQBackend.PYTORCH)
    config = BaseQuantizeConfig(nbits=bits, group_size=64)
    AutoHQQHFModel.quantize_model(lm, quant_config=config, compute_dtype=torch.float32, device="cpu")
