"""Lossless outputs: raw bytes of the dtype the runtime returned, with per-output digests.

Dtypes numpy lacks (bfloat16) live in memory as ml_dtypes arrays and on disk as the unsigned
integer of the same width, with the dtype's name in the metadata. Nothing is rounded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.safenpz import read_npz, save_npz

_STORAGE = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}
NATIVE = {"float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64"}


def dtype_name(arr: np.ndarray) -> str:
    return str(arr.dtype)


def to_storage(arr: np.ndarray) -> np.ndarray:
    name = dtype_name(arr)
    if name in NATIVE:
        return np.ascontiguousarray(arr)
    if name in _STORAGE:
        return np.ascontiguousarray(arr).view(_STORAGE[name])
    raise HspiError(f"cannot store outputs of dtype {name}")


def from_storage(arr: np.ndarray, name: str) -> np.ndarray:
    if name in NATIVE:
        if str(arr.dtype) != name:
            raise HspiError(f"stored outputs are {arr.dtype}, metadata says {name}")
        return arr
    if name in _STORAGE and str(arr.dtype) == _STORAGE[name]:
        import ml_dtypes

        return arr.view(getattr(ml_dtypes, name))
    raise HspiError(f"unknown stored output dtype {name!r}")


def digest(dtype: str, shape: list[int] | tuple[int, ...], raw: bytes) -> str:
    """blake2b-128 of one output's dtype name, shape and raw bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(dtype.encode() + b"\0" + json.dumps([int(s) for s in shape]).encode() + b"\0")
    h.update(raw)
    return h.hexdigest()


def row_digests(outputs: np.ndarray) -> list[str]:
    """The digest of each output (row) of a batch."""
    name, shape = dtype_name(outputs), list(outputs.shape[1:])
    return [digest(name, shape, row.tobytes()) for row in to_storage(outputs)]


def digest_array(outputs: np.ndarray) -> np.ndarray:
    """(n, 16) uint8: the digest of each output, as stored beside outputs in .npz files."""
    return np.frombuffer(b"".join(bytes.fromhex(d) for d in row_digests(outputs)), np.uint8).reshape(-1, 16)


def set_digest(digests: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for d in digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


@dataclass
class RunResult:
    platform: str
    model_sha256: str
    model_name: str
    probes_name: str
    probes_sha256: str
    ids: np.ndarray
    outputs: np.ndarray
    seconds: float = 0.0
    host: dict = field(default_factory=dict)
    repeats: bool | None = None  # whether a repeated sample was bit-identical (None: not repeated)

    @property
    def dtype(self) -> str:
        return dtype_name(self.outputs)

    def digests(self) -> list[str]:
        return row_digests(self.outputs)

    def meta(self) -> dict:
        return {
            "format": "hspi-run/1", "platform": self.platform, "model_sha256": self.model_sha256,
            "model_name": self.model_name, "probes_name": self.probes_name,
            "probes_sha256": self.probes_sha256, "dtype": self.dtype,
            "shape": list(self.outputs.shape), "seconds": round(self.seconds, 6), "host": self.host,
        }

    def save(self, path: str | Path) -> Path:
        return save_npz(path, self.meta(), outputs=to_storage(self.outputs), ids=self.ids,
                        digests=digest_array(self.outputs))


def load_run(path: str | Path) -> RunResult:
    """Read a file written by :meth:`RunResult.save`; digests are recomputed and checked."""
    arrays, meta = read_npz(path, {"outputs", "ids", "digests"}, "output file")
    raw, ids, digests = arrays["outputs"], arrays["ids"], arrays["digests"]
    try:
        outputs = from_storage(raw, str(meta["dtype"]))
        result = RunResult(
            str(meta["platform"]), str(meta["model_sha256"]), str(meta["model_name"]),
            str(meta["probes_name"]), str(meta["probes_sha256"]), ids, outputs,
            float(meta.get("seconds", 0.0)), dict(meta.get("host", {})),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HspiError(f"output file {str(path)!r} is malformed ({type(exc).__name__})")
    if ids.shape != (len(outputs),) or digests.shape != (len(outputs), 16):
        raise HspiError(f"output file {str(path)!r} has mismatched ids or digests")
    if [bytes(r).hex() for r in digests] != result.digests():
        raise HspiError(f"output file {str(path)!r} fails its digests (altered or corrupt)")
    return result
