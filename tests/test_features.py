"""One test per feature on constructed inputs whose answer is known."""

import ml_dtypes
import numpy as np
import pytest

from hspi_onnx.forms import FORMS, View, degrade, round_significant, softmax, top_indices
from hspi_onnx.learn.features import (
    NAMES,
    REFERENCE_FEATURES,
    ieee_bits,
    reference_features,
    row_features,
    value_features,
)

RNG = np.random.default_rng(0)


def vf(values) -> dict:
    return dict(zip(NAMES, value_features(np.atleast_2d(values))[0]))


def rf(x, ref, form="raw", index=None) -> dict:
    return dict(zip(REFERENCE_FEATURES, reference_features(View(np.atleast_2d(x), index), form, np.atleast_2d(ref))[0]))


def randn(m=64, dtype=np.float32):
    return RNG.normal(size=m).astype(dtype)


def test_width_is_the_dtype_the_values_came_in():
    assert vf(randn(dtype=np.float16))["width"] == 16
    assert vf(randn().astype(ml_dtypes.bfloat16))["width"] == 16
    assert vf(randn())["width"] == 32
    assert vf(randn(dtype=np.float64))["width"] == 64


def test_fp16_and_bf16_leave_trailing_zero_mantissa_bits():
    x = randn(256)
    fp16 = vf(x.astype(np.float16).astype(np.float32))
    assert fp16["tz_min"] >= 13 and fp16["tz_ge13"] == 1.0
    bf16 = vf(x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert bf16["tz_min"] >= 16 and bf16["tz_ge16"] == 1.0
    fp32 = vf(x)
    assert fp32["tz_mean"] < 3 and fp32["tz_ge13"] < 0.05


def test_exponent_fields_of_powers_of_two():
    f = vf(np.array([0.25, 0.5, 2.0, 8.0], np.float32))
    assert (f["exp_min"], f["exp_max"], f["exp_mean"]) == (-2, 3, 0.25)
    assert f["exp_std"] == pytest.approx(np.std([-2, -1, 1, 3]))


def test_sign_and_zero_fractions():
    f = vf(np.array([-1.0, -2.0, 0.0, 3.0], np.float32))
    assert f["neg_frac"] == 0.5 and f["zero_frac"] == 0.25


def test_low_mantissa_bits():
    ones = np.nextafter(np.float32(1.0), np.float32(2.0))  # mantissa ...0001
    f = vf(np.full(8, ones, np.float32) * np.float32(1.0))
    assert f["bit0"] == 1.0 and f["bit1"] == 0.0 and f["low_byte"] == pytest.approx(1 / 255)


def test_distinct_values_and_ties():
    f = vf(np.array([1.0, 1.0, 2.0, 3.0], np.float32))
    assert f["distinct_frac"] == 0.75 and f["tie_frac"] == pytest.approx(1 / 3)


def test_sorted_gaps_in_ulps():
    top = np.float32(1.0) + 4 * np.spacing(np.float32(1.0))
    f = vf(np.array([top, 1.0, -5.0], np.float32))
    assert f["gap12_ulp"] == pytest.approx(np.log2(1 + 4))


def test_int8_grid_is_detected():
    scale = np.float32(0.0371)
    on_grid = (RNG.integers(-100, 100, 64).astype(np.float32) * scale).astype(np.float32)
    g = vf(on_grid)
    assert g["grid_fit"] == 1.0 and g["grid_steps"] <= np.log2(1 + 256)
    assert vf(randn())["grid_fit"] < 0.5


def test_reference_features_count_ulps():
    ref = RNG.normal(size=32)
    exact = ref.astype(np.float32)
    f = rf(exact, ref)
    assert f["exact_frac"] == 1.0 and f["err_ulp_max"] <= np.log2(1.5)
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    off = ref + 3 * ulp
    g = rf(off, ref)
    assert g["err_ulp_mean"] == pytest.approx(np.log2(4), rel=1e-3)
    assert g["err_bias"] == pytest.approx(1.0, rel=1e-3) and g["exact_frac"] == 0.0
    assert g["err_pos0"] == pytest.approx(np.log2(4), rel=1e-3)
    assert rf(ref - 3 * ulp, ref)["err_bias"] == pytest.approx(-1.0, rel=1e-3)


def test_relative_error_and_top_agreement():
    ref = np.array([3.0, 1.0, 2.0])
    f = rf(ref * (1 + 1e-3), ref)
    assert f["rel_err"] == pytest.approx(-3, abs=0.01) and f["top_agree"] == 1.0
    assert rf(np.array([1.0, 3.0, 2.0]), ref)["top_agree"] == 0.0


def test_rounded_form_counts_values_equal_to_the_rounded_reference():
    ref = RNG.normal(size=(1, 16))
    f = rf(round_significant(ref, 4), ref, "round4")
    assert f["equal_frac"] == 1.0
    assert rf(round_significant(ref * 1.01, 4), ref, "round4")["equal_frac"] < 0.5


def test_missing_reference_gives_nan_reference_features_only():
    x = randn().reshape(2, 32)
    feats = row_features(View(x), "raw", None)
    k = len(NAMES) - len(REFERENCE_FEATURES)
    assert np.isnan(feats[:, k:]).all() and not np.isnan(feats[:, :k]).all()
    assert np.array_equal(feats[:, :k], row_features(View(x), "raw", x.astype(np.float64))[:, :k], equal_nan=True)


def test_forms():
    x = np.array([[0.5, 2.0, 1.0, 2.0]], np.float32)
    assert set(FORMS) >= {"raw", "round3", "round7", "softmax", "top1", "top5", "argmax"}
    assert top_indices(x, 2).tolist() == [[1, 3]]  # ties go to the lower index
    assert degrade(x, "argmax").index.tolist() == [[1]] and degrade(x, "argmax").values is None
    top = degrade(x, "top5")
    assert top.index.shape == (1, 4) and top.values.tolist() == [[2.0, 2.0, 1.0, 0.5]]
    assert softmax(x).sum() == pytest.approx(1.0) and softmax(x).dtype == np.float32
    assert round_significant(np.array([123456.0, -0.00123456]), 3).tolist() == [123000.0, -0.00123]
    assert degrade(x.astype(ml_dtypes.bfloat16), "raw").values.dtype == ml_dtypes.bfloat16


def test_ieee_bits_are_the_binary32_pattern():
    bits = ieee_bits(View(np.array([[1.0, -2.0]], np.float32)), 3)
    assert bits.shape == (1, 96)
    assert "".join(map(str, bits[0, :32])) == format(0x3F800000, "032b")
    assert "".join(map(str, bits[0, 32:64])) == format(0xC0000000, "032b")
    assert not bits[0, 64:].any()  # padded when an output has fewer values
