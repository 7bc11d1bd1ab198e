import pytest
from hypothesis import given
from hypothesis import strategies as st

from hspi_onnx.errors import BadLabelError, UnknownPlatformError
from hspi_onnx.labels import Platform, matches, select

tok = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,8}", fullmatch=True)
ver = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,8}", fullmatch=True)
dev = st.lists(tok, min_size=1, max_size=3).map(":".join)


@given(tok, ver, dev, tok, st.dictionaries(tok, tok, max_size=5))
def test_canonical_string_parses_back_exactly(rt, version, device, precision, knobs):
    p = Platform(rt, version, device, precision, tuple(knobs.items()))
    assert Platform.parse(str(p)) == p
    assert hash(Platform.parse(str(p))) == hash(p)
    assert str(Platform.parse(str(p))) == str(p)


def test_knob_order_does_not_matter():
    a = Platform.make("onnxruntime", "1.2", "cpu:avx2:x", "fp32", opt="all", bs=8)
    b = Platform.make("onnxruntime", "1.2", "cpu:avx2:x", "fp32", bs=8, opt="all")
    assert a == b and str(a) == "onnxruntime@1.2/cpu:avx2:x/fp32/bs=8,opt=all"


@pytest.mark.parametrize(
    "bad",
    [
        "onnxruntime/cpu/fp32/-",  # no version
        "onnxruntime@1/cpu/fp32",  # three segments
        "onnxruntime@1/cpu/fp32/opt",  # knob without value
        "onnxruntime@1/cpu/fp32/opt=all,bs=8",  # not sorted: not canonical
        "Onnxruntime@1/cpu/fp32/-",  # upper case runtime
        "onnxruntime@1/cpu/fp32/bs=1,bs=2",
    ],
)
def test_bad_labels_are_refused(bad):
    with pytest.raises(BadLabelError):
        Platform.parse(bad)


P = Platform.make("onnxruntime", "1.31.1", "cpu:avx2:amd-epyc", "fp16", bs=8, opt="all", threads=1)


@pytest.mark.parametrize(
    "pattern,hit",
    [
        ("onnxruntime/*/fp16/*", True),
        ("onnxruntime", True),
        ("onnxruntime/cpu", True),
        ("onnxruntime@1.31.1/cpu:avx2:*/fp16", True),
        ("onnxruntime@1.30*", False),
        ("*/*/fp32/*", False),
        ("onnxruntime/*/*/opt=all", True),
        ("onnxruntime/*/*/opt=all,bs=1", False),
        ("onnxruntime/*/*/bs=8,*", True),
        ("pytorch", False),
        ("onnxruntime/gpu", False),
    ],
)
def test_globs(pattern, hit):
    assert matches(P, pattern) is hit


def test_select_errors_with_close_matches():
    q = Platform.make("pytorch", "2", "cpu:avx2:x", "bf16", bs=1)
    assert select([P, q], ["pytorch"]) == [q]
    with pytest.raises(UnknownPlatformError, match="known runtimes: onnxruntime, pytorch"):
        select([P, q], ["tensorrt"])
