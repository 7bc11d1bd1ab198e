"""GGUF files (llama.cpp's model format) read as untrusted input.

The header is parsed here, with every count, length and offset bounded and checked against the
file's size before anything is allocated, so a truncated file, an absurd tensor count or shape,
or bad metadata gives one :class:`BadModelError` line instead of a crash or a huge allocation.
Tensor data is then read through a read-only memory map and dequantized with the ``gguf``
package (``gguf.quants``), the reference implementation that ships with llama.cpp.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx.errors import BadModelError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_TENSORS = 65_536
MAX_KV = 65_536
MAX_STRING = 16 * 1024 * 1024  # a chat template or a merges entry; far above any real one
MAX_ARRAY = 4 * 1024 * 1024  # a vocabulary's tokens
MAX_DIMS = 4
MAX_ELEMENTS = 1 << 36
DEFAULT_ALIGNMENT = 32

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: the fastest-varying axis first
    qtype: int  # ggml type number
    offset: int  # from the start of the data section
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (the reverse of GGUF's)."""
        return tuple(reversed(self.dims))


@dataclass
class GgufModel:
    path: Path
    version: int
    metadata: dict  # key -> value (arrays as lists)
    types: dict  # key -> (value type, element type or None), to write the metadata back
    tensors: list[TensorInfo]
    data_start: int

    def raw(self, info: TensorInfo, data=None) -> np.ndarray:
        """The tensor's bytes as stored (uint8), copied out of the file (or out of ``data``, the
        file already mapped)."""
        if data is None:
            with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return self.raw(info, m)
        start = self.data_start + info.offset
        return np.frombuffer(data[start : start + info.nbytes], dtype=np.uint8).copy()

    def dequantized(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, float32 array in numpy order) of every tensor, in file order (the file mapped once)."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for info in self.tensors:
                qtype = GGMLQuantizationType(info.qtype)
                raw = self.raw(info, m)
                if qtype == GGMLQuantizationType.F32:
                    arr = raw.view("<f4")
                elif qtype == GGMLQuantizationType.F16:
                    arr = raw.view("<f2").astype(np.float32)
                else:
                    rows = int(np.prod(info.shape[:-1], dtype=np.int64)) if len(info.shape) > 1 else 1
                    arr = dequantize(raw.reshape(rows, -1), qtype)
                yield info.name, np.ascontiguousarray(arr, dtype=np.float32).reshape(info.shape)


class _Reader:
    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> BadModelError:
        return BadModelError(f"GGUF file {str(self.path)!r}: {what}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated at byte {self.pos} (needs {n} more of {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise self.fail(f"a string of {n} bytes at byte {self.pos}")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"a string that is not UTF-8 at byte {self.pos}")

    def value(self, vtype: int, depth: int = 0):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if n > MAX_ARRAY:
                raise self.fail(f"an array of {n} values")
            if etype in _SCALARS:  # read in one go: a vocabulary's scores are 49k floats
                fmt = _SCALARS[etype]
                size = struct.calcsize(fmt)
                return list(np.frombuffer(self.take(n * size), dtype=np.dtype(fmt)).tolist())
            return [self.value(etype, depth + 1) for _ in range(n)]
        raise self.fail(f"unknown metadata value type {vtype}")


def read_gguf(path: str | Path) -> GgufModel:
    """Parse and check a GGUF file's header (metadata and tensor table) without trusting it."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise BadModelError(f"cannot read GGUF file {str(path)!r}: {exc.strerror or exc}")
    with f:
        size = path.stat().st_size
        if size < 24:
            raise BadModelError(f"GGUF file {str(path)!r} is {size} bytes: too short for a header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            r = _Reader(data, path)
            if r.take(4) != MAGIC:
                raise r.fail("not a GGUF file (bad magic)")
            version = r.scalar("<I")
            if version not in VERSIONS:
                raise r.fail(f"version {version}; readable: {', '.join(map(str, VERSIONS))}")
            n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
            if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
                raise r.fail(f"{n_tensors} tensors and {n_kv} metadata entries: beyond any real model")
            metadata: dict = {}
            types: dict = {}
            for _ in range(n_kv):
                key = r.string()
                vtype = r.scalar("<I")
                etype = None
                if vtype == _ARRAY:
                    etype = struct.unpack("<I", data[r.pos : r.pos + 4])[0] if r.pos + 4 <= size else None
                if key in metadata:
                    raise r.fail(f"metadata key {key!r} appears twice")
                metadata[key] = r.value(vtype)
                types[key] = (vtype, etype)
            tensors = []
            names = set()
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.scalar("<I")
                if not 1 <= n_dims <= MAX_DIMS:
                    raise r.fail(f"tensor {name!r} has {n_dims} dimensions")
                dims = tuple(r.scalar("<Q") for _ in range(n_dims))
                qtype, offset = r.scalar("<I"), r.scalar("<Q")
                count = 1
                for d in dims:
                    if d == 0 or d > MAX_ELEMENTS:
                        raise r.fail(f"tensor {name!r} has shape {list(dims)}")
                    count *= d
                if count > MAX_ELEMENTS:
                    raise r.fail(f"tensor {name!r} has {count} elements")
                try:
                    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
                except (ValueError, KeyError):
                    raise r.fail(f"tensor {name!r} has unknown type {qtype}")
                if dims[0] % block:
                    raise r.fail(f"tensor {name!r}: a row of {dims[0]} is not whole blocks of {block}")
                if name in names:
                    raise r.fail(f"tensor {name!r} appears twice")
                names.add(name)
                tensors.append(TensorInfo(name, dims, qtype, offset, count // block * type_size))
            alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
            if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
                raise r.fail(f"general.alignment is {alignment!r}")
            data_start = -(-r.pos // alignment) * alignment
            for t in tensors:
                if t.offset % alignment or data_start + t.offset + t.nbytes > size:
                    raise r.fail(f"tensor {t.name!r} lies outside the file (truncated?)")
    return GgufModel(path, version, metadata, types, tensors, data_start)


def write_f32_copy(src: str | Path, out: str | Path) -> Path:
    """A GGUF with ``src``'s metadata and every tensor dequantized to float32 (file type ALL_F32):
    what llama.cpp's quantizer takes to make every other type from the same reference weights."""
    import os

    from gguf import GGUFValueType, GGUFWriter

    model = read_gguf(src)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    arch = str(model.metadata.get("general.architecture", ""))
    writer = GGUFWriter(str(tmp), arch)
    for key, value in model.metadata.items():
        if key in ("general.architecture", "general.alignment"):
            continue
        vtype, etype = model.types[key]
        if key == "general.file_type":
            value = 0  # LLAMA_FTYPE_ALL_F32
        writer.add_key_value(key, value, GGUFValueType(vtype), None if etype is None else GGUFValueType(etype))
    for name, arr in model.dequantized():
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


# nominal bits per weight value of the ggml types (ggml.h's enum ggml_type), scales not counted
GGML_BITS = {0: 32, 1: 16, 2: 4, 3: 4, 6: 5, 7: 5, 8: 8, 9: 8, 10: 2, 11: 3, 12: 4, 13: 5, 14: 6, 15: 8, 30: 16}


def dominant_bits(model: GgufModel) -> int | None:
    """The nominal bits of the ggml type that holds most elements of the transformer blocks'
    matrices (``blk.*``, 2-D): what a file's weights really are. A file type names a target, not
    the result: llama.cpp falls back where a row length does not fit a type's block (SmolLM2's 576
    columns are no multiple of 256, so its "Q6_K" file is mostly Q8_0 and "Q4_K_M" mostly Q5_0).
    None when no block matrix has a known type."""
    counts: dict[int, int] = {}
    for t in model.tensors:
        if t.name.startswith("blk.") and len(t.dims) == 2 and t.qtype in GGML_BITS:
            counts[t.qtype] = counts.get(t.qtype, 0) + int(np.prod(t.dims))
    if not counts:
        return None
    return GGML_BITS[max(counts, key=lambda q: counts[q])]
