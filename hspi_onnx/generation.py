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
  returns as ``top_logprobs``;
* ``logits`` ``[new_tokens, vocab]`` (only with ``full_logits``, a zoo variant such as
  ``smollm2-logits``): every logit at every position, in the runtime's dtype, NaN after a stop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from hspi_onnx.errors import BadModelError

GENERATION_META_KEY = "hspi.generation"
MAX_NEW_TOKENS = 4096
MAX_TOP_K = 20  # what OpenAI-style APIs return at most
OUTPUT_NAMES = ("tokens", "topk_ids", "topk_logits", "topk_logprobs")
FULL_LOGITS = "logits"  # the optional output of every logit (GenerationSpec.full_logits)
MAX_FULL_VALUES = 1 << 24  # new_tokens x vocab logits per chat at most, when full_logits
# the decoder graph's interface (OnnxDecoder's): names in graph order
DECODER_INPUTS = ("input_ids", "past_key", "past_value")
DECODER_OUTPUTS = ("logits", "present_key", "present_value")

# what hspi.generation metadata may ask, a user's file being hostile input (docs/llm.md)
MAX_META_CHARS = 1 << 16  # the metadata's JSON text
MAX_SIZES = {"layers": 1024, "kv_heads": 1024, "head_dim": 1024, "vocab": 1 << 20, "context": 1 << 20}
MAX_KV_CACHE_BYTES = 16 << 30  # float32 keys and values of every layer over the whole context
MAX_STOP_IDS = 64
MAX_SOURCE_CHARS = 64
MAX_EXTRA_DEPTH = 8  # nesting of the provenance object


def _bad(message: str) -> BadModelError:
    return BadModelError(f"bad {GENERATION_META_KEY} metadata: {message}"[:300])


def _int(d: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    """The integer ``d[key]`` in [low, high]: a JSON integer, never a bool, float or string."""
    value = d.get(key, default)
    if value is None:
        raise _bad(f"{key} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{key} must be an integer, not {type(value).__name__} {str(value)[:40]}")
    if not low <= value <= high:
        text = str(value)
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"
        raise _bad(f"{key} is {shown}, outside {low}..{high}")
    return value


def _depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value, without recursion; stops counting past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                break
            stack.extend((x, level + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


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
    full_logits: bool = False  # also record every logit at every position (output "logits")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        if not self.full_logits:  # absent when off: the metadata of exports made before it stays the same
            del d["full_logits"]
        return d

    @property
    def cache_bytes(self) -> int:
        """float32 keys and values of every layer over the whole context."""
        return 2 * 4 * self.layers * self.kv_heads * self.head_dim * self.context

    @classmethod
    def from_dict(cls, d) -> GenerationSpec:
        """The spec a file's metadata describes, every key checked and every size bounded
        (BadModelError naming the first problem)."""
        if not isinstance(d, dict):
            raise BadModelError(f"model metadata {GENERATION_META_KEY} is not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k)[:40] for k in d if k not in known)
        if unknown:
            raise _bad(f"unknown keys {', '.join(unknown[:5])}")
        source = d.get("source")
        if not isinstance(source, str) or not source.isidentifier() or len(source) > MAX_SOURCE_CHARS:
            raise _bad(
                f"source must be a module name of at most {MAX_SOURCE_CHARS} characters, not {str(source)[:40]!r}"
            )
        sizes = {key: _int(d, key, 1, high) for key, high in MAX_SIZES.items() if key != "context"}
        context = _int(d, "context", 2, MAX_SIZES["context"], 2048)
        new_tokens = _int(d, "new_tokens", 1, min(MAX_NEW_TOKENS, context - 1), 16)
        top_k = _int(d, "top_k", 1, min(MAX_TOP_K, sizes["vocab"]), MAX_TOP_K)
        tokens = {key: _int(d, key, 0, sizes["vocab"] - 1) for key in ("bos", "pad")}
        stop = d.get("stop")
        if not isinstance(stop, list) or len(stop) > MAX_STOP_IDS:
            raise _bad(f"stop must be a list of at most {MAX_STOP_IDS} token ids")
        stop_ids = tuple(_int({"stop": t}, "stop", 0, sizes["vocab"] - 1) for t in stop)
        extra = {} if d.get("extra") is None else d["extra"]
        if not isinstance(extra, dict) or _depth(extra, MAX_EXTRA_DEPTH) > MAX_EXTRA_DEPTH:
            raise _bad(f"extra must be a JSON object nested at most {MAX_EXTRA_DEPTH} deep")
        full = d.get("full_logits", False)
        if not isinstance(full, bool):
            raise _bad("full_logits must be true or false")
        if full and new_tokens * sizes["vocab"] > MAX_FULL_VALUES:
            raise _bad(f"full_logits records new_tokens x vocab values per chat; at most {MAX_FULL_VALUES}")
        spec = cls(
            source,
            **sizes,
            **tokens,
            stop=stop_ids,
            new_tokens=new_tokens,
            top_k=top_k,
            context=context,
            extra=extra,
            full_logits=full,
        )
        if spec.cache_bytes > MAX_KV_CACHE_BYTES:
            raise _bad(
                f"a KV cache of {spec.cache_bytes / 2**30:.3g} GiB (layers x kv_heads x head_dim x context, "
                f"float32 keys and values) exceeds {MAX_KV_CACHE_BYTES >> 30} GiB"
            )
        return spec

    @classmethod
    def from_metadata(cls, meta: dict) -> GenerationSpec | None:
        raw = meta.get(GENERATION_META_KEY)
        if raw is None:
            return None
        if not isinstance(raw, str) or len(raw) > MAX_META_CHARS:
            raise BadModelError(
                f"model metadata {GENERATION_META_KEY} is not text of at most {MAX_META_CHARS} characters"
            )
        try:
            parsed = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise BadModelError(f"model metadata {GENERATION_META_KEY} is not valid JSON")
        return cls.from_dict(parsed)

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
        ] + ([{"name": FULL_LOGITS, "dtype": "", "shape": [n, self.vocab]}] if self.full_logits else [])


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")
