"""Reading JSON suspects: bounded parsing, numbers kept with the text they were printed as."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hspi_onnx import oip
from hspi_onnx.match import printed

from .core import MAX_VALUES, _fail


# -- JSON --------------------------------------------------------------------------------------
def _reject_constant(name: str) -> float:
    """NaN, Infinity and -Infinity, as Python's json and many servers print them: evidence, kept."""
    return float(name.replace("Infinity", "inf"))


def _parse_json(path: Path, text: str, budget: list[int] | None = None):
    try:
        return printed.loads(text, budget, parse_constant=_reject_constant)
    except RecursionError:
        _fail(path, "JSON is nested too deeply")
    except ValueError as exc:
        msg = str(exc).split(":")[0][:80]
        _fail(path, f"holds {msg}" if "decimal numbers" in msg else f"is not valid JSON ({msg})")


def _flatten(path: Path, data, what: str, depth: int, out: list) -> None:
    if depth > 4:
        _fail(path, f"{what} is nested too deeply")
    for v in data:
        if isinstance(v, list):
            _flatten(path, v, what, depth + 1, out)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(path, f"{what} holds a non-number ({type(v).__name__})")
        out.append(v)
    if len(out) > MAX_VALUES:
        _fail(path, f"{what} holds more than {MAX_VALUES} values")


def _numbers(path: Path, data, what: str, integer: bool = False, texts: list | None = None) -> np.ndarray:
    """A flat float64 (or int64) array from a JSON list of numbers (row-major), refusing anything
    else; ``texts`` collects each number as it was printed."""
    if not isinstance(data, list):
        _fail(path, f"{what} must be a list of numbers")
    flat: list = []
    _flatten(path, data, what, 0, flat)
    if texts is not None:
        texts += [printed.text_of(v) for v in flat]
    if integer and not all(isinstance(v, int) for v in flat):
        _fail(path, f"{what} must hold integers")
    try:
        arr = np.array(flat, dtype=np.int64 if integer else np.float64)
    except OverflowError:
        _fail(path, f"{what} holds a number out of range")
    return arr


def _cast(path: Path, x: np.ndarray, dtype: str) -> np.ndarray:
    name = oip.datatype(dtype)
    assert name is not None  # callers pass one of FLOAT_DTYPES, each a protocol datatype
    with np.errstate(over="ignore"):
        out = x.astype(oip.numpy_dtype(name))
    if (np.isfinite(x) & ~np.isfinite(out.astype(np.float64))).any():  # printed finite, yet beyond the dtype
        _fail(path, f"values overflow {dtype}")
    return out


def _precision(path: Path, texts: list[str], shape) -> printed.Precision:
    try:
        return printed.infer(texts, tuple(shape))
    except ValueError as exc:
        _fail(path, str(exc))
