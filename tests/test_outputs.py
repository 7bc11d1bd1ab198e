import ml_dtypes
import numpy as np
import pytest

from hspi_onnx.errors import HspiError
from hspi_onnx.outputs import RunResult, load_run, row_digests


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.float64])
def test_outputs_round_trip_bit_for_bit(tmp_path, dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(5, 7 * np.dtype(dtype).itemsize), dtype=np.uint8)
    out = raw.view(dtype)  # every bit pattern, NaN payloads and negative zeros included
    res = RunResult("x@1/cpu/fp32/-", "m" * 64, "m", "p", "p" * 64, np.arange(5), out)
    back = load_run(res.save(tmp_path / "o.npz"))
    assert back.outputs.dtype == out.dtype
    assert back.outputs.tobytes() == out.tobytes()
    assert back.digests() == res.digests()


def test_digest_depends_on_dtype_and_bytes():
    a = np.zeros((1, 4), np.float16)
    assert row_digests(a) != row_digests(a.view(ml_dtypes.bfloat16))
    b = a.copy()
    b.view(np.uint16)[0, 3] = 1  # one ulp in the lowest bit
    assert row_digests(a) != row_digests(b)


def test_altered_outputs_fail_their_digests(tmp_path):
    res = RunResult("x@1/cpu/fp32/-", "m", "m", "p", "p", np.arange(2), np.ones((2, 3), np.float32))
    path = res.save(tmp_path / "o.npz")
    with np.load(path) as npz:
        parts = {k: npz[k] for k in npz.files}
    parts["outputs"] = parts["outputs"] * 2
    np.savez(tmp_path / "t.npz", **parts)
    with pytest.raises(HspiError, match="digests"):
        load_run(tmp_path / "t.npz")
