"""Output forms a service may return instead of raw outputs, and how to produce them.

``raw``
    the outputs as computed, in their native dtype.
``roundK`` (K = 3..7)
    each value rounded to K significant decimal digits and read back as float64 (a JSON API
    printing ``%.{K-1}e``).
``softmax``
    probabilities over the last axis, computed in float64 and returned as float32; a suspect
    may hold only the top k of them, with their indices.
``topK`` (K = 1, 5; a suspect may hold any K up to 4096)
    the K largest values over the last axis with their indices, largest first.
``argmax``
    the index of the largest value only.
``logprobs``
    the k largest log-probabilities (log-softmax computed in float64, as LLM APIs return them
    per token) with their token ids, largest first; k is the suspect's.

Degrading the float64 reference of the same probes in the same way lets features compare like
with like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hspi_onnx.choices import Form
from hspi_onnx.errors import HspiError

FORMS = tuple(f.value for f in Form)  # raw, round3..7, softmax, top1, top5, argmax, logprobs
DEGRADED = FORMS[1:10]  # what evaluation covers by default
INDEXED = ("top1", "top5", "argmax", "logprobs")  # forms that carry indices


@dataclass
class View:
    """What a suspect of one form reveals: values (n, m) and/or indices (n, k)."""

    values: np.ndarray | None
    index: np.ndarray | None = None


MAX_K = 4096


def top_k(form: str) -> int | None:
    """K of a ``topK`` form (any K from 1 to :data:`MAX_K`), else None."""
    m = re.fullmatch(r"top([1-9]\d{0,3})", form) if isinstance(form, str) else None
    return int(m.group(1)) if m and int(m.group(1)) <= MAX_K else None


def check_form(form: str) -> str:
    if form not in FORMS and top_k(form) is None:
        raise HspiError(f"unknown output form {form!r}; forms: {', '.join(FORMS)} (topK for any K up to {MAX_K})")
    return form


def _as_rows(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1)


def round_significant(x: np.ndarray, digits: int) -> np.ndarray:
    """``x`` (any float dtype) rounded to ``digits`` significant decimal digits, as float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    nz = np.isfinite(x) & (x != 0)
    exp = np.floor(np.log10(np.abs(x[nz])))
    scale = 10.0 ** (digits - 1 - exp)
    out[nz] = np.round(x[nz] * scale) / scale
    out[~np.isfinite(x)] = x[~np.isfinite(x)]
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Natural-log probabilities over the last axis, in float64."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def top_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, largest first, ties to the lower index."""
    x = np.asarray(x, dtype=np.float64)
    return np.argsort(-x, axis=-1, kind="stable")[:, :k]


def degrade(outputs: np.ndarray, form: str, k: int | None = None) -> View:
    """The view of ``outputs`` (n, *shape) a service returning ``form`` gives (``k``: how many
    log-probabilities, default 5)."""
    check_form(form)
    rows = _as_rows(outputs)
    if form == "raw":
        return View(rows)
    m = re.fullmatch(r"round(\d)", form)
    if m:
        return View(round_significant(rows, int(m.group(1))))
    if form == "softmax" and k is None:
        return View(softmax(rows))
    if form == "argmax":
        return View(None, top_indices(rows, 1))
    if form == "logprobs":
        rows = log_softmax(rows)
    elif form == "softmax":  # the top k probabilities
        rows = softmax(rows)
    else:
        k = int(form[3:])
    k = 5 if k is None else k
    idx = top_indices(rows, min(k, rows.shape[1]))
    return View(np.take_along_axis(rows, idx, axis=1), idx)
