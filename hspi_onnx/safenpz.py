"""``.npz`` containers with a JSON ``meta`` record, written and read without pickle.

Reading treats the file as hostile and bounds memory before allocating: a size cap on the
file, at most a few members, each ``.npy`` header parsed first (numpy's safe header reader,
``allow_pickle`` never on), object dtypes refused, the declared shape checked against a byte
budget, and exactly the declared number of bytes read back. Metadata is a bounded UTF-8 JSON
object. Every failure is one error of the caller's class naming the file.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from hspi_onnx.errors import HspiError

MAX_FILE_BYTES = 1 << 30
MAX_ARRAY_BYTES = 1 << 29  # all arrays of one file together, once decompressed
MAX_META_BYTES = 1 << 16
MAX_MEMBERS = 64
# What a malformed file can raise anywhere in zipfile / zlib / numpy's header parser.
READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    SyntaxError,
    RecursionError,
    UnicodeError,
    zipfile.BadZipFile,
    zlib.error,
)


def save_npz(path: str | Path, meta: dict, **arrays: np.ndarray) -> Path:
    path = Path(path)
    record = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, meta=record, **cast(dict[str, Any], arrays))  # numpy's stub fears an allow_pickle among them
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _read_member(zf: zipfile.ZipFile, name: str, budget: int, fail) -> np.ndarray:
    """One ``.npy`` member, refusing before allocation when it declares more than ``budget`` bytes."""
    fmt = np.lib.format
    with zf.open(name + ".npy") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            fail(f"array {name!r} has an unsupported .npy version")
        if dtype.hasobject or dtype.kind not in "biufc":
            fail(f"array {name!r} has a non-numeric dtype ({dtype.str}); pickled objects are never loaded")
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            fail(f"array {name!r} declares an invalid shape")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > budget:
            fail(f"array {name!r} declares shape {tuple(shape)} ({nbytes} bytes), over the limit")
        data = fh.read(nbytes)
    if len(data) != nbytes:
        fail(f"array {name!r} is truncated")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def read_npz(
    path: str | Path,
    keys: set[str],
    what: str,
    error: type[HspiError] = HspiError,
    optional: frozenset[str] = frozenset(),
    pattern: str | None = None,
    meta_required: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays other than meta, meta as a dict) of a file holding ``keys`` + meta (+ ``optional``,
    + any member whose whole name matches the regular expression ``pattern``); without
    ``meta_required`` a file of plain ``np.savez`` arrays reads with an empty meta record."""
    path = Path(path)
    name = f"{what} {str(path)!r}"

    def fail(msg: str) -> NoReturn:
        raise error(f"{name}: {msg}")

    if not path.is_file():
        raise error(f"{name} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise error(f"{name} is larger than 1 GiB")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                fail(f"has {len(infos)} members; an .npz of this kind has at most {MAX_MEMBERS}")
            members = [i.filename[:-4] for i in infos if i.filename.endswith(".npy")]
            if len(members) != len(infos) or len(set(members)) != len(members):
                fail("holds members that are not distinct .npy arrays")
            present = set(members)
            patterned = {m for m in present if pattern and re.fullmatch(pattern, m)}
            needed = keys | ({"meta"} if meta_required else set())
            if not needed <= present or present - keys - optional - patterned - {"meta"}:
                want = ", ".join(sorted(needed))
                extra = f" (optionally {', '.join(sorted(optional))})" if optional else ""
                extra += f" (and members named {pattern})" if pattern else ""
                fail(f"must hold exactly {want}{extra}")
            budget = MAX_ARRAY_BYTES
            arrays = {}
            for k in sorted(present):
                arrays[k] = _read_member(zf, k, MAX_META_BYTES if k == "meta" else budget, fail)
                budget -= arrays[k].nbytes
    except HspiError:
        raise
    except READ_ERRORS as exc:
        raise error(f"{name} is not a readable .npz ({type(exc).__name__})")
    if "meta" not in arrays:
        return arrays, {}
    record = arrays.pop("meta")
    if record.dtype != np.uint8 or record.ndim != 1:
        fail("has a malformed meta record")
    try:
        meta = json.loads(record.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        fail("has a malformed meta record")
    if not isinstance(meta, dict):
        fail("has a malformed meta record")
    return arrays, meta
