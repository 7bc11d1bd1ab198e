"""Lossless outputs: raw bytes of the dtype the runtime returned, with per-output digests.

Dtypes numpy lacks (bfloat16) live in memory as ml_dtypes arrays and on disk as the unsigned
integer of the same width, with the dtype's name in the metadata. Nothing is rounded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.safenpz import read_npz, save_npz

STORAGE = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}
NATIVE = {"float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"}


def dtype_name(arr: np.ndarray) -> str:
    return str(arr.dtype)


def to_storage(arr: np.ndarray) -> np.ndarray:
    name = dtype_name(arr)
    if name in NATIVE:
        return np.ascontiguousarray(arr)
    if name in STORAGE:
        return np.ascontiguousarray(arr).view(STORAGE[name])
    raise HspiError(f"cannot store outputs of dtype {name}")


def from_storage(arr: np.ndarray, name: str) -> np.ndarray:
    if name in NATIVE:
        if str(arr.dtype) != name:
            raise HspiError(f"stored outputs are {arr.dtype}, metadata says {name}")
        return arr
    if name in STORAGE and str(arr.dtype) == STORAGE[name]:
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
    """Every output of one platform on a probe set, in the dtype the runtime returned."""

    platform: str
    model_sha256: str
    model_name: str
    probes_name: str
    probes_sha256: str
    ids: np.ndarray
    outputs: dict[str, np.ndarray]  # output name -> (n, *shape), in the model's output order
    seconds: float = 0.0
    host: dict = field(default_factory=dict)
    repeats: bool | None = None  # whether a repeated sample was bit-identical (None: not repeated)
    # whether the first probe, in a batch of copies of itself, gives the bits it gave among other
    # probes (None: bs = 1 or not checked); False: the platform's output depends on what shares its batch
    batch_independent: bool | None = None
    # the same platform on another machine over the first probes (distributed builds):
    # {"probes": how many, "differing": how many gave other bits, "where": that machine, "nodes": both}
    cross_check: dict | None = None
    # where the run's wall time went, in seconds (not stored): "prepare" (loading the model on the
    # runtime, measuring its state), "checks" (the repeat sample and the batch-of-copies check)
    phases: dict = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    @property
    def first(self) -> np.ndarray:
        return next(iter(self.outputs.values()))

    def dtypes(self) -> dict[str, str]:
        return {k: dtype_name(v) for k, v in self.outputs.items()}

    def digests(self) -> dict[str, list[str]]:
        """Per output, the digest of each probe's output."""
        return {k: row_digests(v) for k, v in self.outputs.items()}

    def set_digest(self) -> str:
        """One digest of every output of every probe: equal iff the runs are bit-identical."""
        return set_digest([d for ds in self.digests().values() for d in ds])

    def meta(self) -> dict:
        return {
            "format": RUN_FORMAT,
            "platform": self.platform,
            "model_sha256": self.model_sha256,
            "model_name": self.model_name,
            "probes_name": self.probes_name,
            "probes_sha256": self.probes_sha256,
            "seconds": round(self.seconds, 6),
            "host": self.host,
            "outputs": [{"name": k, "dtype": dtype_name(v), "shape": list(v.shape)} for k, v in self.outputs.items()],
        }

    def save(self, path: str | Path) -> Path:
        return save_npz(path, self.meta(), ids=self.ids, **output_arrays(self.outputs))


RUN_FORMAT = "hspi-run/2"
MAX_OUTPUTS = 30
OUTPUT_MEMBERS = r"(output|digest)_\d{1,2}"


def output_arrays(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``output_i`` (raw storage) and ``digest_i`` ((n, 16) uint8) per output, as .npz members."""
    if len(outputs) > MAX_OUTPUTS:
        raise HspiError(f"at most {MAX_OUTPUTS} outputs can be stored in one file")
    arrays = {}
    for i, v in enumerate(outputs.values()):
        arrays[f"output_{i}"] = to_storage(v)
        arrays[f"digest_{i}"] = digest_array(v)
    return arrays


def read_outputs(
    arrays: dict[str, np.ndarray], meta: dict, fail: Callable[[str], NoReturn]
) -> tuple[dict[str, np.ndarray], bool]:
    """(name -> outputs decoded to their dtype, whether digests were present and checked) from
    the members :func:`output_arrays` wrote (or the single ``outputs``/``digests`` pair of
    ``hspi-run/1`` files, whose output is named by ``meta["output"]`` or left unnamed: "")."""
    entries: list | None  # meta's list of {"name", "dtype"}, checked below
    if "outputs" in arrays:
        entries = [{"name": str(meta.get("output", "")), "dtype": str(meta.get("dtype", arrays["outputs"].dtype))}]
        raw: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {0: (arrays["outputs"], arrays.get("digests"))}
    else:
        entries = meta.get("outputs")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_OUTPUTS:
            fail("names no outputs")
        raw = {i: (arrays.get(f"output_{i}"), arrays.get(f"digest_{i}")) for i in range(len(entries))}
        expected = {f"{p}_{i}" for i in range(len(entries)) for p in ("output", "digest")}
        if not {k for k in arrays if re.fullmatch(OUTPUT_MEMBERS, k)} <= expected:
            fail("holds output members its meta record does not name")
    out: dict[str, np.ndarray] = {}
    checked = True
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or entry["name"] in out:
            fail("has a malformed or repeated output name")
        values, digests = raw[i]
        if values is None:
            fail(f"lacks the outputs of {entry['name'][:40]!r}")
        try:
            decoded = from_storage(values, str(entry.get("dtype", values.dtype)))
        except HspiError:
            fail(f"outputs are {values.dtype} but the metadata says {str(entry.get('dtype'))[:32]}")
        if decoded.ndim < 1:
            fail("has outputs without a probe axis")
        if digests is None:
            checked = False
        else:
            if digests.shape != (len(decoded), 16) or digests.dtype != np.uint8:
                fail("has malformed digests")
            if [bytes(r).hex() for r in digests] != row_digests(decoded):
                fail("fails its digests (altered or corrupt)")
        out[entry["name"]] = decoded
    return out, checked


def load_run(path: str | Path) -> RunResult:
    """Read a file written by :meth:`RunResult.save` (or an ``hspi-run/1`` file); digests are
    recomputed and checked."""
    arrays, meta = read_npz(
        path, {"ids"}, "output file", optional=frozenset({"outputs", "digests"}), pattern=OUTPUT_MEMBERS
    )

    def fail(msg: str) -> NoReturn:
        raise HspiError(f"output file {str(path)!r} {msg}")

    outputs, checked = read_outputs(arrays, meta, fail)
    if not checked:
        fail("lacks the digests of its outputs")
    ids = arrays["ids"]
    try:
        result = RunResult(
            str(meta["platform"]),
            str(meta["model_sha256"]),
            str(meta["model_name"]),
            str(meta["probes_name"]),
            str(meta["probes_sha256"]),
            ids,
            outputs,
            float(meta.get("seconds", 0.0)),
            dict(meta.get("host", {})),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HspiError(f"output file {str(path)!r} is malformed ({type(exc).__name__})")
    if ids.ndim != 1 or any(len(v) != len(ids) for v in outputs.values()):
        fail("has mismatched ids and outputs")
    return result
