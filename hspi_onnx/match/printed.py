"""What a printed number can and cannot be: decimals read as their text.

A service prints a float in some format. Read back through ``float`` the format is lost, and a
value printed with 4 significant digits equals no platform's output. Read as text, a decimal
``d`` whose last digit has unit ``10**q`` stands for every value within half a unit of it:
``[d - 0.5 * 10**q, d + 0.5 * 10**q]``. That holds for any printer that rounds to the nearest
(fixed digits, fixed decimals, ``%g``, exponent forms) and for shortest round-trip printing too
(the shortest decimal chosen is the closest to the value at its length). Shortest round-trip
printing of a float32 or float64 says more: the value is exactly the float the decimal reads
back as. :func:`infer` tells the two apart from the whole set of numbers: shortest reprs of
generic floats need 8-9 (float32) or 16-17 (float64) significant digits, fixed formats print
fewer, or the same number for every value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

FLOAT32_REPR, FLOAT64_REPR, FIXED = "float32 shortest repr", "float64 repr", "fixed"


class PrintedFloat(float):
    """A JSON float that remembers how it was printed."""

    __slots__ = ("text",)  # no per-number __dict__: a 16 MiB suspect holds millions of them
    text: str

    def __new__(cls, text: str) -> PrintedFloat:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


MAX_FLOATS = 1 << 22  # about 0.5 GB of PrintedFloats: bounded before the parser finishes


def loads(text: str, budget: list[int] | None = None, **kw):
    """``json.loads`` whose floats are :class:`PrintedFloat` (ints stay ints); ValueError once
    more floats than ``budget[0]`` (shared by several calls: decremented) have been read."""
    left = budget if budget is not None else [MAX_FLOATS]

    def parse(t: str) -> PrintedFloat:
        left[0] -= 1
        if left[0] < 0:
            raise ValueError(f"more than {MAX_FLOATS} decimal numbers")
        return PrintedFloat(t)

    return json.loads(text, parse_float=parse, **kw)


def text_of(v) -> str:
    return v.text if isinstance(v, PrintedFloat) else repr(v)


@dataclass
class Precision:
    """How a set of numbers was printed, and the interval each value stands for."""

    mode: str  # FIXED, FLOAT32_REPR or FLOAT64_REPR
    description: str  # e.g. "4 significant digits", "3 decimals", "float32 shortest repr"
    lo: np.ndarray  # float64, shape of the values
    hi: np.ndarray
    bits: float  # median bits of the value each printed number leaves (53 / 24 for reprs)
    query_bits: float = 0.0  # median over queries of the bits all of a query's numbers leave together


def _parts(text: str) -> tuple[Decimal, int, int]:
    """(the decimal, its significant digits, the exponent of its last digit)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text[:30]!r} is not a decimal number") from None
    if not d.is_finite():
        raise ValueError(f"{text[:30]!r} is not finite")
    sign, digits, exp = d.as_tuple()
    sig = len("".join(map(str, digits)).lstrip("0")) or 1
    return d, sig, int(exp)


def last_digit(text: str) -> tuple[int, int]:
    """(significant digits, exponent of the last digit) of a printed decimal (ValueError if it
    is none): ``"-0.0312"`` -> (3, -4), ``"1.5e-3"`` -> (2, -4)."""
    _, sig, exp = _parts(text)
    return sig, exp


def _is_repr(d: Decimal, dtype) -> bool:
    """Is ``d`` (normalized) the shortest round-trip decimal of the ``dtype`` float it reads as?"""
    x = dtype(d)
    if not np.isfinite(x):
        return False
    shortest = repr(float(x)) if dtype is np.float64 else np.format_float_scientific(x, unique=True)
    if Decimal(shortest).is_nan() or not Decimal(shortest).is_finite():
        return False
    return Decimal(shortest).normalize() == d.normalize()


def exact_in(texts: list[str], dtype) -> bool:
    """Does every number of ``texts`` give one ``dtype`` value exactly: a decimal whose float64
    reading is a ``dtype`` value (e.g. float64 repr of float32 outputs, as JSON encoders print
    them), or the shortest repr of a ``dtype`` value? Then the printing lost no bit. Any short
    decimal is some float's shortest repr: reprs count only where the set prints as many
    digits as generic values of ``dtype`` need (as :func:`infer` decides)."""
    special = {"nan", "inf", "-inf", "infinity", "-infinity"}
    dtype = np.dtype(dtype)
    parts = [_parts(t) for t in texts if t.strip().lower() not in special]
    if not parts:
        return True
    need = {np.float16: 4, np.float32: 8, np.float64: 16}.get(dtype.type)
    reprs = need is not None and float(np.median([sig for _, sig, _ in parts])) >= need
    for d, _, _ in parts:
        x = float(d)
        with np.errstate(over="ignore"):
            if float(np.asarray(x).astype(dtype)) == x:
                continue
        if reprs and _is_repr(d, dtype.type):
            continue
        return False
    return True


def infer(texts: list[str], shape: tuple[int, ...]) -> Precision:
    """The printing of ``texts`` (every number of a suspect, row-major in ``shape``). NaN and
    infinities stand for themselves (``lo == hi``) and take no part in the inference."""
    special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "infinity": np.inf, "-infinity": -np.inf}
    flat = np.array([special.get(t.strip().lower(), 0.0) for t in texts], dtype=np.float64)
    odd = np.array([t.strip().lower() in special for t in texts], dtype=bool)
    if odd.all():
        flat = flat.reshape(shape)
        return Precision(FIXED, "only NaN / infinities", flat, flat.copy(), 0.0)
    p, number_bits = _infer([t for t, o in zip(texts, odd) if not o])
    lo, hi, nb = flat.copy(), flat.copy(), np.zeros(len(flat))
    lo[~odd], hi[~odd], nb[~odd] = p.lo, p.hi, number_bits
    per_query = nb.reshape(shape[0], -1).sum(axis=1) if shape and shape[0] else nb
    return Precision(
        p.mode, p.description, lo.reshape(shape), hi.reshape(shape), p.bits, round(float(np.median(per_query)), 1)
    )


def _infer(texts: list[str]) -> tuple[Precision, np.ndarray]:
    """(the printing of ``texts``, the bits of its value each number leaves)."""
    shape = (len(texts),)
    parts = [_parts(t) for t in texts]
    values = np.array([float(d) for d, _, _ in parts], dtype=np.float64).reshape(shape)
    sig = np.array([s for _, s, _ in parts])
    exps = np.array([e for _, _, e in parts])
    median = float(np.median(sig)) if len(sig) else 0.0
    if median >= 16 and all(_is_repr(d, np.float64) for d, _, _ in parts):
        return Precision(FLOAT64_REPR, FLOAT64_REPR, values, values.copy(), 53.0), np.full(len(values), 53.0)
    if median >= 8 and all(_is_repr(d, np.float32) for d, _, _ in parts):
        exact = values.astype(np.float32).astype(np.float64)
        return Precision(FLOAT32_REPR, FLOAT32_REPR, exact, exact.copy(), 24.0), np.full(len(values), 24.0)
    half = np.array([float(Decimal(5).scaleb(e - 1)) for e in exps.tolist()]).reshape(shape)
    # widened by a float64 ulp: the bounds themselves are rounded to float64
    lo = np.nextafter(values - half, -np.inf)
    hi = np.nextafter(values + half, np.inf)
    if len(set(sig.tolist())) == 1:
        what = f"{int(sig[0])} significant digits"
    elif len(set(exps.tolist())) == 1:
        what = f"{max(0, -int(exps[0]))} decimals"
    else:
        what = f"mixed: {int(sig.min())} to {int(sig.max())} significant digits"
    with np.errstate(divide="ignore"):
        rel = np.abs(values) / (2 * half)
    number_bits = np.minimum(53.0, np.log2(np.maximum(rel, 1.0)))  # a printed 0 leaves none
    bits = number_bits[values != 0] if (values != 0).any() else np.zeros(1)
    return Precision(FIXED, what, lo, hi, round(float(np.median(bits)), 2)), number_bits


def bits_note(p: Precision) -> str:
    return (
        f"printed as {p.description}: each number leaves about {p.bits:g} bits of the value, "
        f"a query's numbers about {p.query_bits:g} bits together"
        if p.mode == FIXED
        else f"printed as {p.description}: exact to the bit"
    )


__all__ = [
    "FIXED",
    "FLOAT32_REPR",
    "FLOAT64_REPR",
    "Precision",
    "PrintedFloat",
    "bits_note",
    "exact_in",
    "infer",
    "loads",
    "text_of",
]
