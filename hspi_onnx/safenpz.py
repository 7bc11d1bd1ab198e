"""``.npz`` containers with a JSON ``meta`` record, written and read without pickle.

Reading treats the file as hostile: size cap, ``allow_pickle=False``, the exact set of
arrays, a bounded UTF-8 JSON object as metadata. Every failure is one error of the caller's
class naming the file.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import HspiError

MAX_FILE_BYTES = 1 << 30
MAX_META_BYTES = 1 << 16


def save_npz(path: str | Path, meta: dict, **arrays: np.ndarray) -> Path:
    path = Path(path)
    record = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, meta=record, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def read_npz(path: str | Path, keys: set[str], what: str,
             error: type[HspiError] = HspiError) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays other than meta, meta as a dict) of a file holding exactly ``keys`` + meta."""
    path = Path(path)
    name = f"{what} {str(path)!r}"
    if not path.is_file():
        raise error(f"{name} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise error(f"{name} is larger than 1 GiB")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != keys | {"meta"}:
                raise error(f"{name} must hold exactly {', '.join(sorted(keys | {'meta'}))}")
            arrays = {k: npz[k] for k in keys}
            record = npz["meta"]
    except HspiError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise error(f"{name} is not a readable .npz ({type(exc).__name__})")
    if record.dtype != np.uint8 or record.ndim != 1 or record.size > MAX_META_BYTES:
        raise error(f"{name} has a malformed meta record")
    try:
        meta = json.loads(record.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise error(f"{name} has a malformed meta record")
    if not isinstance(meta, dict):
        raise error(f"{name} has a malformed meta record")
    return arrays, meta
