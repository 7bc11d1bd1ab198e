"""Features: numbers computed from one output vector (one query), in a fixed order.

Every output is analysed as IEEE-754 binary32 (binary16 and bfloat16 values are exact in it;
float64 values of rounded forms are rounded to it). A classifier sees one feature row per
query; evidence from n queries is combined by the classifier (see :mod:`hspi_onnx.learn.classify`).
The list and meaning of every feature is in docs/features.md.

Reference features compare with the float64 reference of the same model and probe, degraded to
the same output form; without a reference they are NaN (CatBoost treats NaN as missing), so
nothing else changes.
"""

from __future__ import annotations

import numpy as np

from hspi_onnx.forms import View, round_significant, top_indices

MANTISSA_BITS = 23
VALUE_FEATURES = [
    "width",  # bits of the dtype the values came in (16, 32, 64)
    "exp_mean",
    "exp_std",
    "exp_min",
    "exp_max",  # unbiased binary32 exponents of non-zero values
    "neg_frac",
    "zero_frac",
    "tz_mean",
    "tz_min",
    "tz_max",
    "tz_ge13",
    "tz_ge16",  # trailing zero mantissa bits
    "bit0",
    "bit1",
    "bit2",
    "bit3",
    "low_byte",  # low-order mantissa bits: fraction set, mean low byte
    "distinct_frac",
    "tie_frac",  # distinct values / m; equal neighbours after sorting
    "gap12_ulp",
    "gap_min_ulp",
    "gap_med_ulp",  # sorted-value gaps, log2(1 + gap / ulp)
    "grid_fit",
    "grid_steps",  # values on a uniform grid (int8 dequantisation) and its size
]
REFERENCE_FEATURES = [
    "err_ulp_mean",
    "err_ulp_med",
    "err_ulp_max",
    "err_ulp_p90",  # log2(1 + |x - ref| / ulp(ref))
    "exact_frac",  # |x - ref| <= ulp/2: the correctly rounded binary32 result
    "err_bias",  # mean signed error / mean absolute error
    "rel_err",  # log10 of mean |x - ref| / mean |ref|
    "top_agree",  # fraction of top indices equal to the reference's
    "equal_frac",  # values equal to the reference degraded the same way (rounded forms)
] + [f"err_pos{i}" for i in range(10)]  # signed error of the first values, sign * log2(1 + |x - ref| / ulp)
POSITIONS = 10
NAMES = VALUE_FEATURES + REFERENCE_FEATURES
# Features that show the dtype of the last operation rather than the precision of the whole
# computation (see classify.mask_storage).
STORAGE_FEATURES = [
    "width",
    "tz_mean",
    "tz_min",
    "tz_max",
    "tz_ge13",
    "tz_ge16",
    "bit0",
    "bit1",
    "bit2",
    "bit3",
    "low_byte",
    "distinct_frac",
    "tie_frac",
    "gap_min_ulp",
    "gap_med_ulp",
    "grid_fit",
    "grid_steps",
]


def _width(values: np.ndarray) -> float:
    return float(np.dtype(values.dtype).itemsize * 8)


def _trailing_zeros(mant: np.ndarray) -> np.ndarray:
    low = (mant & (~mant + np.uint32(1))).astype(np.float64)  # lowest set bit
    tz = np.where(mant == 0, MANTISSA_BITS, np.log2(np.maximum(low, 1.0)))
    return tz


def _ulp(v: np.ndarray) -> np.ndarray:
    """Spacing of binary32 at |v| (float64), never zero."""
    a = np.abs(v).astype(np.float32)
    return np.maximum(np.spacing(a).astype(np.float64), np.float64(np.finfo(np.float32).smallest_subnormal))


def _masked(stat, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    filled = np.where(mask, values, np.nan)
    with np.errstate(all="ignore"), _quiet():
        return stat(filled, axis=1)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def value_features(values: np.ndarray) -> np.ndarray:
    """(n, len(VALUE_FEATURES)) for values (n, m) of any float dtype."""
    n, m = values.shape
    x32 = np.asarray(values, dtype=np.float32)
    bits = x32.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.float64) - 127
    mant = bits & np.uint32(0x7FFFFF)
    finite = np.isfinite(x32)
    nonzero = finite & (x32 != 0)
    tz = _trailing_zeros(mant)
    out = np.full((n, len(VALUE_FEATURES)), np.nan)
    out[:, 0] = _width(values)
    out[:, 1] = _masked(np.nanmean, exp, nonzero)
    out[:, 2] = _masked(np.nanstd, exp, nonzero)
    out[:, 3] = _masked(np.nanmin, exp, nonzero)
    out[:, 4] = _masked(np.nanmax, exp, nonzero)
    out[:, 5] = (x32 < 0).mean(axis=1)
    out[:, 6] = (x32 == 0).mean(axis=1)
    out[:, 7] = _masked(np.nanmean, tz, nonzero)
    out[:, 8] = _masked(np.nanmin, tz, nonzero)
    out[:, 9] = _masked(np.nanmax, tz, nonzero)
    out[:, 10] = _masked(np.nanmean, (tz >= 13).astype(float), nonzero)
    out[:, 11] = _masked(np.nanmean, (tz >= 16).astype(float), nonzero)
    for b in range(4):
        out[:, 12 + b] = _masked(np.nanmean, ((mant >> b) & 1).astype(float), nonzero)
    out[:, 16] = _masked(np.nanmean, (mant & 0xFF).astype(float) / 255.0, nonzero)
    s = np.sort(np.where(finite, x32, 0).astype(np.float64), axis=1)[:, ::-1]
    if m >= 2:
        gaps = s[:, :-1] - s[:, 1:]
        out[:, 17] = ((gaps != 0).sum(axis=1) + 1) / m
        out[:, 18] = (gaps == 0).mean(axis=1)
        gap_ulp = np.log2(1 + gaps / _ulp(s[:, :-1]))
        out[:, 19] = gap_ulp[:, 0]
        out[:, 20] = _masked(np.nanmin, gap_ulp, gaps > 0)
        out[:, 21] = np.median(gap_ulp, axis=1)
        pos = np.where(gaps > 0, gaps, np.inf)
        step = pos.min(axis=1, keepdims=True)
        ok = np.isfinite(step[:, 0])
        with np.errstate(all="ignore"):
            r = (s[:, :1] - s) / step
            fit = (np.abs(r - np.round(r)) < 1e-3).mean(axis=1)
            steps = np.log2(1 + (s[:, 0] - s[:, -1]) / step[:, 0])
        out[:, 22] = np.where(ok, fit, np.nan)
        out[:, 23] = np.where(ok, steps, np.nan)
    return out


def reference_features(view: View, form: str, ref: np.ndarray) -> np.ndarray:
    """(n, len(REFERENCE_FEATURES)) comparing ``view`` with the float64 reference rows ``ref``."""
    n = len(ref)
    out = np.full((n, len(REFERENCE_FEATURES)), np.nan)
    ref = ref.reshape(n, -1)
    ref_top = top_indices(ref, view.index.shape[1] if view.index is not None else 1)
    if view.index is not None:
        out[:, 7] = (view.index == ref_top).mean(axis=1)
    if view.values is None:
        return out
    x = np.asarray(view.values, dtype=np.float64)
    if view.index is None:
        out[:, 7] = (top_indices(x, 1) == ref_top).mean(axis=1)
    if form == "softmax":
        r = _softmax64(ref)
    elif view.index is not None:
        r = np.take_along_axis(ref, view.index, axis=1)
    else:
        r = ref
    if form.startswith("round"):
        out[:, 8] = (x == round_significant(r, int(form[5:]))).mean(axis=1)
    err = x - r
    e = np.abs(err) / _ulp(r)
    le = np.log2(1 + e)
    out[:, 0] = le.mean(axis=1)
    out[:, 1] = np.median(le, axis=1)
    out[:, 2] = le.max(axis=1)
    out[:, 3] = np.percentile(le, 90, axis=1)
    out[:, 4] = (e <= 0.5).mean(axis=1)
    signed = np.sign(err) * le
    k = min(POSITIONS, signed.shape[1])
    out[:, 9 : 9 + k] = signed[:, :k]
    with np.errstate(all="ignore"):
        out[:, 5] = (err / _ulp(r)).mean(axis=1) / (e.mean(axis=1) + 1e-12)
        out[:, 6] = np.log10(np.abs(err).mean(axis=1) / (np.abs(r).mean(axis=1) + 1e-30) + 1e-30)
    return out


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def row_features(view: View, form: str, ref: np.ndarray | None) -> np.ndarray:
    """(n, len(NAMES)) float32: value features, then reference features (NaN without ``ref``)."""
    rows = view.values if view.values is not None else view.index
    assert rows is not None  # a view holds values, indices or both
    n = len(rows)
    vals = value_features(view.values) if view.values is not None else np.full((n, len(VALUE_FEATURES)), np.nan)
    refs = reference_features(view, form, ref) if ref is not None else np.full((n, len(REFERENCE_FEATURES)), np.nan)
    return np.concatenate([vals, refs], axis=1).astype(np.float32)


# -- the paper's baseline input ---------------------------------------------------------------
def ieee_bits(view: View, n_values: int) -> np.ndarray:
    """(n, 32 * n_values) uint8: the binary32 bits of the first ``n_values`` values of each
    output (HSPI-LD's input); index-only forms contribute their indices as numbers."""
    src = view.values if view.values is not None else view.index
    x = np.asarray(src, dtype=np.float32)[:, :n_values]
    if x.shape[1] < n_values:
        x = np.pad(x, ((0, 0), (0, n_values - x.shape[1])))
    return float32_bits(x).reshape(len(x), -1)


def float32_bits(x: np.ndarray) -> np.ndarray:
    """The binary32 bits of every value, most significant first: shape ``x.shape + (32,)``, uint8."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    shifts = np.arange(31, -1, -1, dtype=np.uint32)
    return ((b[..., None] >> shifts) & 1).astype(np.uint8)
