from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from hspi_onnx.errors import HspiError
from hspi_onnx.outputs import RUN_FORMAT, RunResult, load_run, row_digests


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.float64])
def test_outputs_round_trip_bit_for_bit(tmp_path, dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(5, 7 * np.dtype(dtype).itemsize), dtype=np.uint8)
    out = raw.view(dtype)  # every bit pattern, NaN payloads and negative zeros included
    second = rng.normal(size=(5, 2, 3)).astype(np.float32)
    res = RunResult("x@1/cpu/fp32/-", "m" * 64, "m", "p", "p" * 64, np.arange(5), {"logits": out, "hidden": second})
    back = load_run(res.save(tmp_path / "o.npz"))
    assert back.output_names == ["logits", "hidden"]  # every output, in the model's order
    assert back.outputs["logits"].dtype == out.dtype and back.outputs["logits"].tobytes() == out.tobytes()
    assert back.outputs["hidden"].shape == (5, 2, 3) and back.outputs["hidden"].tobytes() == second.tobytes()
    assert back.digests() == res.digests() and back.set_digest() == res.set_digest()
    assert back.meta()["format"] == RUN_FORMAT


def test_digest_depends_on_dtype_and_bytes():
    a = np.zeros((1, 4), np.float16)
    assert row_digests(a) != row_digests(a.view(ml_dtypes.bfloat16))
    b = a.copy()
    b.view(np.uint16)[0, 3] = 1  # one ulp in the lowest bit
    assert row_digests(a) != row_digests(b)


def test_altered_outputs_fail_their_digests(tmp_path):
    res = RunResult(
        "x@1/cpu/fp32/-",
        "m",
        "m",
        "p",
        "p",
        np.arange(2),
        {"a": np.ones((2, 3), np.float32), "b": np.zeros((2, 1), np.float16)},
    )
    path = res.save(tmp_path / "o.npz")
    with np.load(path) as npz:
        parts = {k: npz[k] for k in npz.files}
    altered = dict(parts, output_1=parts["output_1"] + 1)
    np.savez(tmp_path / "t.npz", **altered)
    with pytest.raises(HspiError, match="digests"):
        load_run(tmp_path / "t.npz")
    extra = dict(parts, output_5=parts["output_0"])
    np.savez(tmp_path / "x.npz", **extra)
    with pytest.raises(HspiError, match="does not name"):
        load_run(tmp_path / "x.npz")


def test_run_files_of_the_first_format_still_load():
    """tests/data/db-v1-suspect.npz was written by `hspi run` before several outputs (hspi-run/1)."""
    from hspi_onnx.match.suspect import load_suspect

    path = Path(__file__).parent / "data" / "db-v1-suspect.npz"
    s = load_suspect(path)
    assert len(s) == 8 and s.form == "raw" and s.values.dtype == np.float16
