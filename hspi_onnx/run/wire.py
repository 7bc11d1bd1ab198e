"""Frames between the runner and its worker processes: no pickle, arrays as raw bytes.

A frame is an 8-byte little-endian length, a UTF-8 JSON header of that length, then the bytes
of each array the header lists (``{"arrays": [{"dtype", "shape", "nbytes"}, ...]}``), in order.
Dtypes numpy lacks (bfloat16) travel as their storage integers and are restored by name, as
on disk (:mod:`hspi_onnx.outputs`).
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from collections.abc import Sequence

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.outputs import STORAGE, from_storage, to_storage

MAX_HEADER = 1 << 24
MAX_PAYLOAD = 1 << 34


class WireClosed(HspiError):
    """The other side closed its end (a worker that died)."""


class WireTimeout(HspiError):
    """Nothing came within the deadline."""


def encode(header: dict, arrays: Sequence[np.ndarray] = ()) -> list[bytes | memoryview]:
    stored = [to_storage(a) for a in arrays]
    header = dict(
        header,
        arrays=[
            {"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": int(s.nbytes)} for a, s in zip(arrays, stored)
        ],
    )
    head = json.dumps(header).encode()
    parts: list[bytes | memoryview] = [struct.pack("<Q", len(head)), head]
    return parts + [np.ascontiguousarray(s).data.cast("B") for s in stored]


def send(fd: int, header: dict, arrays: Sequence[np.ndarray] = ()) -> None:
    for part in encode(header, arrays):
        view = memoryview(part)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise WireTimeout("no answer before the deadline")
        chunk = os.read(fd, min(left, 1 << 22))
        if not chunk:
            raise WireClosed("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _parse(read) -> tuple[dict, list[np.ndarray]]:
    """One frame from ``read(n)`` (exactly n bytes or an error)."""
    (length,) = struct.unpack("<Q", read(8))
    if length > MAX_HEADER:
        raise HspiError(f"frame header of {length} bytes, over the limit")
    header = json.loads(read(length).decode())
    arrays = []
    total = 0
    for spec in header.pop("arrays", []):
        nbytes = int(spec["nbytes"])
        total += nbytes
        if total > MAX_PAYLOAD:
            raise HspiError("frame payload over the limit")
        name = str(spec["dtype"])
        storage = STORAGE.get(name, name)
        raw = np.frombuffer(read(nbytes), dtype=storage).reshape(spec["shape"])
        arrays.append(from_storage(raw, name))
    return header, arrays


def recv(fd: int, deadline: float | None = None) -> tuple[dict, list[np.ndarray]]:
    return _parse(lambda n: _read_exact(fd, n, deadline))


def pack(header: dict, arrays: Sequence[np.ndarray] = ()) -> bytes:
    """One frame as bytes (what :func:`send` writes), e.g. to hand to another machine."""
    return b"".join(bytes(part) for part in encode(header, arrays))


def unpack(data: bytes) -> tuple[dict, list[np.ndarray]]:
    """The frame :func:`pack` made; anything else, or trailing bytes, is an error."""
    view, pos = memoryview(data), 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise HspiError("truncated frame")
        pos += n
        return view[pos - n : pos].tobytes()

    header, arrays = _parse(read)
    if pos != len(view):
        raise HspiError(f"{len(view) - pos} bytes after the frame")
    return header, arrays
