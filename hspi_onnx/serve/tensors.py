"""KServe v2 (Open Inference Protocol) tensors: JSON and the binary-tensor extension.

Requests name each input with its datatype and shape; its values are either ``data`` (flat or
nested JSON numbers) or, with ``parameters.binary_data_size``, raw little-endian bytes after the
JSON header, whose length the ``Inference-Header-Content-Length`` HTTP header gives (what
tritonclient sends by default). Outputs come back as JSON numbers (a float printed as Python
prints the float64 the value widens to: exact, and cast back to its datatype it is the same
bits) or, where asked (``parameters.binary_data_output``, per output ``parameters.binary_data``),
as raw bytes after the JSON header, as Triton does.
"""

from __future__ import annotations

import json
import math

import numpy as np

from hspi_onnx import oip
from hspi_onnx.serve.service import BadRequest

MAX_RANK = 8
MAX_VALUES = 1 << 24
MAX_TENSORS = 64


def datatype(dtype) -> str:
    name = oip.datatype(dtype)
    if name is None:
        raise BadRequest(f"dtype {dtype} has no KServe datatype")
    return name


def parse_header(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON request and the binary data after it."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer")
        if not 0 < size <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {size} does not fit a body of {len(body)} bytes")
    try:
        doc = json.loads(body[:size])
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request is not JSON: {str(exc)[:120]}")
    if not isinstance(doc, dict):
        raise BadRequest("the request must be a JSON object")
    return doc, body[size:]


def _shape(name: str, shape) -> tuple[int, ...]:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_RANK
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_VALUES for s in shape)
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of 1 to {MAX_RANK} non-negative integers")
    if math.prod(shape) > MAX_VALUES:
        raise BadRequest(f"input {name!r}: shape {shape} holds over {MAX_VALUES} values")
    return tuple(shape)


def _from_json(name: str, data, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except ValueError:
        raise BadRequest(f"input {name!r}: data must be a flat or regularly nested list of numbers")
    allowed = "b" if dtype.kind == "b" else ("biu" if dtype.kind in "iu" else "biuf")
    if arr.dtype.kind not in allowed:
        raise BadRequest(f"input {name!r}: data holds {arr.dtype.kind!r}-kind values, not {dtype} values")
    if arr.size != math.prod(shape):
        raise BadRequest(
            f"input {name!r}: data holds {arr.size} values, shape {list(shape)} declares {math.prod(shape)}"
        )
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise BadRequest(f"input {name!r}: values outside the range of {dtype}")
    return arr.astype(dtype).reshape(shape)


def _from_bytes(name: str, raw: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise BadRequest(
            f"input {name!r}: {len(raw)} bytes of data, shape {list(shape)} of {datatype(dtype)} "
            f"needs {math.prod(shape) * dtype.itemsize}"
        )
    return oip.from_le_bytes(raw, datatype(dtype)).reshape(shape)


def decode_inputs(doc: dict, binary: bytes, specs) -> dict[str, np.ndarray]:
    """The request's inputs by name, checked against the model's input specs (name, datatype)."""
    inputs = doc.get("inputs")
    if (
        not isinstance(inputs, list)
        or not 1 <= len(inputs) <= MAX_TENSORS
        or not all(isinstance(i, dict) for i in inputs)
    ):
        raise BadRequest("inputs must be a list of tensor objects")
    wanted = {s.name: s for s in specs}
    out: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        name = tensor.get("name")
        if not isinstance(name, str) or name not in wanted:
            raise BadRequest(f"no input named {str(name)[:80]!r}; the model takes {', '.join(wanted)}")
        if name in out:
            raise BadRequest(f"input {name!r} is given twice")
        want = datatype(wanted[name].dtype)
        if tensor.get("datatype") != want:
            raise BadRequest(f"input {name!r} takes datatype {want}, not {str(tensor.get('datatype'))[:16]!r}")
        dtype, shape = oip.numpy_dtype(want), _shape(name, tensor.get("shape"))
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"input {name!r}: parameters must be an object")
        size = params.get("binary_data_size")
        if size is None:
            out[name] = _from_json(name, tensor.get("data"), dtype, shape)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
            raise BadRequest(f"input {name!r}: binary_data_size {str(size)[:20]} does not fit the binary data")
        out[name] = _from_bytes(name, binary[offset : offset + size], dtype, shape)
        offset += size
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [n for n in wanted if n not in out]
    if missing:
        raise BadRequest(f"missing inputs: {', '.join(missing)}")
    return out


def requested_outputs(doc: dict, names: list[str]) -> dict[str, bool]:
    """Output name -> binary, in the request's order (every output when it names none)."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("parameters must be an object")
    default = params.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise BadRequest("parameters.binary_data_output must be true or false")
    asked = doc.get("outputs")
    if asked is None:
        return {n: default for n in names}
    if not isinstance(asked, list) or not 1 <= len(asked) <= MAX_TENSORS or not all(isinstance(o, dict) for o in asked):
        raise BadRequest("outputs must be a list of objects naming model outputs")
    out: dict[str, bool] = {}
    for o in asked:
        name, oparams = o.get("name"), o.get("parameters") or {}
        if not isinstance(name, str) or name not in names:
            raise BadRequest(f"no output named {str(name)[:80]!r}; the model returns {', '.join(names)}")
        if not isinstance(oparams, dict) or not isinstance(oparams.get("binary_data", default), bool):
            raise BadRequest(f"output {name!r}: parameters.binary_data must be true or false")
        out[name] = oparams.get("binary_data", default)
    return out


def encode_outputs(header: dict, outputs: dict[str, np.ndarray], wanted: dict[str, bool]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    tensors, chunks = [], []
    for name, binary in wanted.items():
        arr = outputs[name]
        t: dict[str, object] = {"name": name, "datatype": datatype(arr.dtype), "shape": list(arr.shape)}
        if binary:
            chunks.append(oip.to_le_bytes(arr))
            t["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            t["data"] = oip.json_values(arr)
        tensors.append(t)
    head = json.dumps({**header, "outputs": tensors}).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
