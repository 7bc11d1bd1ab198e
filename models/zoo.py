"""The zoo's table: which models it has, their builder modules, and the export version."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    name: str
    module: str  # module under hspi_onnx.models holding build(seed)
    summary: str
    input_kind: str


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
    ]
}

ZOO_VERSION = 1  # bump when any builder changes its output
