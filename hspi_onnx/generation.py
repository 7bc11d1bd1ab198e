"""Language models that generate: what a chat probe feeds and what a generation returns.

An LLM in the zoo is an ONNX decoder with a KV cache, whose metadata ``hspi.generation``
describes it (cache layout, vocabulary, stop tokens) and sets the generation: ``new_tokens``
greedy tokens after the prompt, ``top_k`` alternatives kept at every position. Its probes are
not the graph's inputs but prompts: ``input_ids`` (right-padded with ``pad``) and
``attention_mask`` (ones over the prompt). Each probe's outputs, whatever the runtime:

* ``tokens`` ``[new_tokens]`` int32: the generated ids, ``-1`` after a stop token;
* ``topk_ids`` ``[new_tokens, top_k]`` int32: at every position that produced a token (the
  prefill's last position, then each decode step), the ``top_k`` highest logits' ids, highest
  first, ties to the lower id; ``-1`` after a stop;
* ``topk_logits`` ``[new_tokens, top_k]``: those logits, in the dtype the runtime returned
  them (float32 from llama.cpp, bf16 from a bf16 transformers model ...), NaN after a stop;
* ``topk_logprobs`` ``[new_tokens, top_k]`` float32: log-softmax over the whole vocabulary,
  computed in float64 from the runtime's logits and rounded once: what an OpenAI-style API
  returns as ``top_logprobs``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from hspi_onnx.errors import BadModelError

GENERATION_META_KEY = "hspi.generation"
MAX_NEW_TOKENS = 4096
MAX_TOP_K = 20  # what OpenAI-style APIs return at most
OUTPUT_NAMES = ("tokens", "topk_ids", "topk_logits", "topk_logprobs")


@dataclass(frozen=True)
class GenerationSpec:
    source: str  # the zoo model whose conversions (GGUF, Hugging Face folder) serve the other runtimes
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    bos: int
    pad: int
    stop: tuple[int, ...]
    new_tokens: int = 16
    top_k: int = MAX_TOP_K
    context: int = 2048  # the longest prompt plus generation a runtime is set up for
    extra: dict = field(default_factory=dict)  # provenance: exporter, opset, weight digests

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d) -> GenerationSpec:
        if not isinstance(d, dict):
            raise BadModelError("model metadata hspi.generation is not a JSON object")
        try:
            spec = cls(
                source=str(d["source"]),
                layers=int(d["layers"]),
                kv_heads=int(d["kv_heads"]),
                head_dim=int(d["head_dim"]),
                vocab=int(d["vocab"]),
                bos=int(d["bos"]),
                pad=int(d["pad"]),
                stop=tuple(int(x) for x in d["stop"]),
                new_tokens=int(d.get("new_tokens", 16)),
                top_k=int(d.get("top_k", MAX_TOP_K)),
                context=int(d.get("context", 2048)),
                extra=dict(d.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadModelError(f"bad hspi.generation metadata: {type(exc).__name__}: {exc}")
        if min(spec.layers, spec.kv_heads, spec.head_dim, spec.vocab) < 1:
            raise BadModelError("bad hspi.generation metadata: sizes must be positive")
        if not 1 <= spec.new_tokens <= MAX_NEW_TOKENS or not 1 <= spec.top_k <= MAX_TOP_K:
            raise BadModelError(
                f"bad hspi.generation metadata: new_tokens in 1..{MAX_NEW_TOKENS}, top_k in 1..{MAX_TOP_K}"
            )
        if any(not 0 <= t < spec.vocab for t in (spec.bos, spec.pad, *spec.stop)):
            raise BadModelError("bad hspi.generation metadata: special token ids outside the vocabulary")
        return spec

    @classmethod
    def from_metadata(cls, meta: dict) -> GenerationSpec | None:
        raw = meta.get(GENERATION_META_KEY)
        if raw is None:
            return None
        try:
            return cls.from_dict(json.loads(raw))
        except (ValueError, RecursionError):
            raise BadModelError(f"model metadata {GENERATION_META_KEY} is not valid JSON")

    def input_specs(self) -> list[dict]:
        """The probe inputs (InputSpec dicts): prompt ids and their mask, any length."""
        return [
            {
                "name": "input_ids",
                "kind": "tokens",
                "shape": [None],
                "dtype": "int64",
                "vocab": self.vocab,
                "dims": ["prompt"],
            },
            {"name": "attention_mask", "kind": "mask", "shape": [None], "dtype": "int64", "dims": ["prompt"]},
        ]

    def output_specs(self) -> list[dict]:
        """The generation outputs (OutputSpec dicts); ``topk_logits``' dtype is the runtime's."""
        n, k = self.new_tokens, self.top_k
        return [
            {"name": "tokens", "dtype": "int32", "shape": [n]},
            {"name": "topk_ids", "dtype": "int32", "shape": [n, k]},
            {"name": "topk_logits", "dtype": "", "shape": [n, k]},
            {"name": "topk_logprobs", "dtype": "float32", "shape": [n, k]},
        ]
