"""Safe reading of ONNX files: every ONNX file is treated as hostile input.

Checks, before anything runs: the file exists and is not absurdly large, the protobuf parses,
external-data references stay inside the model's directory (no absolute paths, no ``..``,
no symlink escapes) and lie within their files, and ``onnx.checker`` accepts the graph.
"""

from __future__ import annotations

import os
from pathlib import Path

from hspi_onnx.cache import sha256_file
from hspi_onnx.errors import BadModelError

__all__ = ["sha256_file", "load_onnx", "external_data_files", "MAX_MODEL_BYTES"]

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit for one message


def _external_entries(model) -> list:
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


def _check_external(model, base: Path) -> None:
    base_real = base.resolve()
    for tensor in _external_entries(model):
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ".." in Path(loc).parts:
            raise BadModelError(
                f"refusing ONNX model: external data {loc!r} of tensor {tensor.name!r} "
                "points outside the model's directory"
            )
        target = (base / loc).resolve()
        if base_real not in target.parents:
            raise BadModelError(
                f"refusing ONNX model: external data {loc!r} of tensor {tensor.name!r} "
                "resolves outside the model's directory"
            )
        if not target.is_file():
            raise BadModelError(f"external data file {loc!r} of tensor {tensor.name!r} is missing")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info.get("length", 0) or 0)
        except ValueError:
            raise BadModelError(f"external data of tensor {tensor.name!r} has a bad offset/length")
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            raise BadModelError(f"external data of tensor {tensor.name!r} lies beyond the end of {loc!r}")


def load_onnx(path: str | os.PathLike):
    """Load and validate an ONNX model; raise :class:`BadModelError` on anything unsafe."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise BadModelError(f"ONNX model {str(path)!r} does not exist")
    if not path.is_file():
        raise BadModelError(f"ONNX model {str(path)!r} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise BadModelError(f"ONNX model {str(path)!r} is empty")
    if size > MAX_MODEL_BYTES:
        raise BadModelError(f"ONNX model {str(path)!r} is larger than 2 GiB")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several types on garbage
        raise BadModelError(f"{str(path)!r} is not a valid ONNX file ({type(exc).__name__})")
    if not model.HasField("graph") or not model.graph.node:
        raise BadModelError(f"{str(path)!r} holds no ONNX graph")
    _check_external(model, path.parent)
    external = bool(_external_entries(model))
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    try:
        # the bytes that were parsed, checked without serializing the model again (a 540 MB
        # decoder: 0.3 s instead of 2.1 s); with external data, the loaded model
        onnx.checker.check_model(model if external else data)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadModelError(f"ONNX checker rejects {str(path)!r}: {first}")
    return model


def external_data_files(path: str | os.PathLike) -> list[str]:
    """The external-data files an ONNX file (one :func:`load_onnx` accepted) reads, relative to
    its directory and checked to stay inside it: what must travel with it to another machine."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load_model_from_string(path.read_bytes())  # the references, data not loaded
    except Exception as exc:  # protobuf raises several types on garbage
        raise BadModelError(f"{str(path)!r} is not a valid ONNX file ({type(exc).__name__})")
    _check_external(model, path.parent)
    return sorted(
        {info["location"] for info in ({e.key: e.value for e in t.external_data} for t in _external_entries(model))}
    )
