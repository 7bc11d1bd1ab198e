"""The decode loop every generating runtime shares: prefill, then one step per token, greedy,
with the top-k alternatives of every position recorded as :mod:`hspi_onnx.generation`
describes. A runtime family supplies only a :class:`Stepper` (its own forward pass with its own
cache); choosing tokens, ranking the top k, the log-softmax and stopping happen here, the same
for all, so two runtimes differ in these outputs only where their logits differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.generation import DECODER_OUTPUTS, FULL_LOGITS, GenerationSpec


def conversions(model, runtime: str):
    """(generation spec, the module under ``hspi_onnx.models`` that makes ``model``'s GGUF and
    Hugging Face conversions) of a language model; UnsupportedError for any other model."""
    spec = model.generation
    if spec is None:
        raise UnsupportedError(f"{runtime} runs language models here; {model.name} is not one")
    source = model.conversions()
    if source is None:
        raise UnsupportedError(
            f"{model.name}: no conversions for it (they are made from the zoo's weights and stand only for "
            f"the zoo's own export of {spec.source!r})"
        )
    return spec, source


class Stepper(Protocol):
    def start(self, prompt: np.ndarray) -> np.ndarray:
        """Forget any earlier sequence, run the prompt (1-D int64 ids); the last position's
        logits over the vocabulary, in the runtime's dtype."""
        ...

    def step(self, token: int) -> np.ndarray:
        """Append one token; the logits of its position."""
        ...


def _undefined(wide: np.ndarray) -> bool:
    """Whether softmax(row) is undefined: a NaN or +inf logit, or no finite one."""
    return bool(np.isnan(wide).any() or np.isposinf(wide).any() or not np.isfinite(wide).any())


def top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, logits, logprobs) of the ``k`` highest logits, highest first, ties to the lower id.
    Logprobs are the log-softmax over the whole row in float64, rounded once to float32.
    Non-finite logits are data, never an error: +inf ranks first, NaN last (below -inf), and
    where the softmax is undefined (a NaN or +inf logit, or none finite) all k logprobs are NaN."""
    wide = np.asarray(row).astype(np.float64).ravel()
    order = np.argsort(-wide, kind="stable")[:k]  # numpy sorts NaN last
    if _undefined(wide):
        lp = np.full(len(order), np.nan, dtype=np.float32)
    else:
        peak = wide[np.isfinite(wide)].max()
        lse = peak + np.log(np.exp(wide - peak).sum())
        lp = (wide[order] - lse).astype(np.float32)
    return order.astype(np.int32), np.asarray(row).ravel()[order], lp


def sample(row: np.ndarray, seed: int, position: int) -> int:
    """A token drawn from softmax(row) (temperature 1, whole vocabulary) with a fixed seed: the
    uniform draw comes from numpy's PCG64 seeded with (seed, position), so it depends on nothing
    but the seed, the position and the runtime's logits. Where the softmax is undefined (a NaN
    or +inf logit, or none finite) the draw is greedy's choice, the first of :func:`top_k`."""
    wide = np.asarray(row).astype(np.float64).ravel()
    if _undefined(wide):
        return int(np.argsort(-wide, kind="stable")[0])
    p = np.exp(wide - wide[np.isfinite(wide)].max())
    cdf = np.cumsum(p)
    u = np.random.Generator(np.random.PCG64([seed, position])).random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


def generate(
    stepper: Stepper,
    prompt: np.ndarray,
    spec: GenerationSpec,
    forced: np.ndarray | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """``spec.new_tokens`` tokens after ``prompt``: greedy; sampled with ``seed`` (see
    :func:`sample`); or teacher-forced: ``forced`` is the continuation to score, fed token by
    token whatever the runtime would have chosen (at most ``new_tokens`` of it; stop tokens in it
    do not stop it). Positions after a stop token (or the forced continuation's end) hold -1 ids
    and NaN values."""
    n, k = spec.new_tokens, spec.top_k
    full = None  # every logit of every position (spec.full_logits), in the runtime's dtype
    tokens = np.full(n, -1, dtype=np.int32)
    ids = np.full((n, k), -1, dtype=np.int32)
    logprobs = np.full((n, k), np.nan, dtype=np.float32)
    logits = None
    last = n if forced is None else min(n, len(forced))
    row = stepper.start(np.asarray(prompt, dtype=np.int64))
    for pos in range(last):
        row = np.asarray(row)
        if row.ndim != 1 or row.shape[0] < spec.vocab or not _floating(row.dtype):
            raise UnsupportedError(
                f"the runtime returned logits of shape {row.shape} and dtype {row.dtype}; "
                f"the decode loop needs a float row of at least the vocabulary's {spec.vocab}"
            )
        row = row[: spec.vocab]  # a padded vocabulary's extra columns are never tokens
        top_ids, top_logits, top_lp = top_k(row, k)
        if logits is None:
            logits = np.full((n, k), np.nan, dtype=top_logits.dtype)
            if spec.full_logits:
                full = np.full((n, spec.vocab), np.nan, dtype=row.dtype)
        if full is not None:
            full[pos] = row
        if forced is not None:
            token = int(forced[pos])
        elif seed is not None:
            token = sample(row, seed, pos)
        else:
            token = int(top_ids[0])
        tokens[pos], ids[pos], logits[pos], logprobs[pos] = token, top_ids, top_logits, top_lp
        if (forced is None and token in spec.stop) or pos == last - 1:
            break
        row = stepper.step(token)
    if logits is None:  # nothing generated: an empty forced continuation
        logits = np.full((n, k), np.nan, dtype=np.float32)
    out = {"tokens": tokens, "topk_ids": ids, "topk_logits": logits, "topk_logprobs": logprobs}
    if spec.full_logits:
        out[FULL_LOGITS] = full if full is not None else np.full((n, spec.vocab), np.nan, dtype=logits.dtype)
    return out


class GenerationSession:
    """The session protocol (``run(feeds) -> outputs``) over a stepper: each row of a batch of
    chat probes (``input_ids`` right-padded, ``attention_mask``) is generated on its own, so the
    outputs carry a batch axis as every other model's do."""

    def __init__(self, stepper: Stepper, spec: GenerationSpec, native=None) -> None:
        self.stepper, self.spec, self.native = stepper, spec, native

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row's generation; a probe set may add ``sample_seed`` (``[n, 1]``: sampled with
        that seed, -1 greedy) or ``forced_ids`` with ``forced_mask`` (the continuation to score,
        teacher-forced)."""
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        seeds, forced, forced_mask = feeds.get("sample_seed"), feeds.get("forced_ids"), feeds.get("forced_mask")
        rows = []
        for b in range(ids.shape[0]):
            length = int(np.asarray(mask[b]).sum())
            if length < 1 or length + self.spec.new_tokens > self.spec.context:
                raise UnsupportedError(f"a prompt of {length} tokens does not fit the context of {self.spec.context}")
            seed = int(seeds[b].ravel()[0]) if seeds is not None else -1
            cont = None
            if forced is not None and forced_mask is not None:
                cont = forced[b, : int(np.asarray(forced_mask[b]).sum())]
            rows.append(generate(self.stepper, ids[b, :length], self.spec, cont, seed if seed >= 0 else None))
        return {name: np.stack([r[name] for r in rows]) for name in rows[0]}


class OnnxDecoder:
    """A stepper over an ONNX decoder with the zoo's cache layout (``input_ids``, ``past_key``,
    ``past_value`` in; ``logits``, ``present_key``, ``present_value`` out), whatever runs it.
    ONNX Runtime, OpenVINO and the ONNX-to-PyTorch converter share it; each gives only
    ``run(input_ids, past_key, past_value) -> (logits, present_key, present_value)`` in its own
    array type, ``empty(shape)`` for the cache before the prompt, and ``to_numpy`` for logits.
    The graph's declared interface was checked when the model was opened; what a runtime
    returns is checked at every step (UnsupportedError: that platform fails, nothing else)."""

    def __init__(self, run: Callable, spec: GenerationSpec, empty: Callable, to_numpy: Callable = np.asarray) -> None:
        self._run, self.spec, self._empty, self._to_numpy = run, spec, empty, to_numpy
        self._key = self._value = None
        self._length = 0  # positions in the cache

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        s = self.spec
        out = self._run(ids.reshape(1, -1), self._key, self._value)
        if not isinstance(out, (list, tuple)) or len(out) != len(DECODER_OUTPUTS):
            raise UnsupportedError(f"the decoder returned {type(out).__name__}, not {', '.join(DECODER_OUTPUTS)}")
        logits, key, value = out
        total = self._length + ids.size
        want = (s.layers, 1, s.kv_heads, total, s.head_dim)
        for name, cache in zip(DECODER_OUTPUTS[1:], (key, value)):
            if tuple(getattr(cache, "shape", ())) != want:
                raise UnsupportedError(
                    f"the decoder returned {name} of shape {tuple(getattr(cache, 'shape', ()))}; "
                    f"hspi.generation's cache layout needs {want}"
                )
        row = self._to_numpy(logits)
        if row.ndim != 3 or row.shape[0] != 1 or row.shape[1] not in (1, ids.size) or row.shape[2] < s.vocab:
            raise UnsupportedError(
                f"the decoder returned logits of shape {row.shape} for {ids.size} tokens; "
                f"the decode loop needs (1, {ids.size}, {s.vocab}) (or more logits per position: a padded vocabulary)"
            )
        self._key, self._value, self._length = key, value, total
        return row[0, -1]

    def start(self, prompt: np.ndarray) -> np.ndarray:
        s = self.spec
        shape = (s.layers, 1, s.kv_heads, 0, s.head_dim)
        self._key, self._value, self._length = self._empty(shape), self._empty(shape), 0
        return self._forward(np.asarray(prompt, dtype=np.int64))

    def step(self, token: int) -> np.ndarray:
        return self._forward(np.array([token], dtype=np.int64))


def _floating(dtype) -> bool:
    """float16/32/64, or ml_dtypes' bfloat16 (what the converter returns for bf16)."""
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"
