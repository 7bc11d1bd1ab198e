"""The Open Inference Protocol's (KServe v2) tensor datatypes, shared by the server
(:mod:`hspi_onnx.serve`), the client (:mod:`hspi_onnx.query`) and the suspect reader."""

from __future__ import annotations

import sys

import numpy as np

DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "bfloat16",
}
FLOAT_DATATYPES = ("FP16", "FP32", "FP64", "BF16")  # the ones whose outputs can be matched
LABEL_DATATYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")  # a label per row
_NAMES = {v: k for k, v in DATATYPES.items()}


def datatype(dtype) -> str | None:
    """The datatype name of a numpy dtype (or dtype name), or None when the protocol has none."""
    return _NAMES.get(str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype)


def numpy_dtype(datatype_name: str) -> np.dtype:
    """The numpy dtype of a datatype name (ml_dtypes' for BF16)."""
    name = DATATYPES[datatype_name]
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def from_le_bytes(raw: bytes, datatype_name: str) -> np.ndarray:
    """A flat native array from the little-endian bytes of the binary-tensor extension."""
    dtype = numpy_dtype(datatype_name)
    if dtype.kind == "b":
        return np.frombuffer(raw, np.uint8) != 0
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)


def to_le_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr)
    return (arr.byteswap() if sys.byteorder == "big" else arr).tobytes()


def json_values(arr: np.ndarray) -> list:
    """A tensor's values as a flat JSON list; floats (float16/32/64, bfloat16) through float64,
    whose shortest repr reads back as the same double, so a cast back to the dtype gives the same bits."""
    if arr.dtype.kind in "fV":
        return np.asarray(arr, np.float64).ravel().tolist()
    return np.asarray(arr).ravel().tolist()
