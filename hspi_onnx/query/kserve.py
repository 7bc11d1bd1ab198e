"""The Open Inference Protocol (KServe v2) over REST: requests from probes, answers checked and
turned into suspect-file responses (docs/formats.md section 2).

A request carries a batch of probes as JSON tensors (floats printed with round-trip precision);
with ``binary`` it asks for the binary-tensor extension (``binary_data_output``) and the answer's
raw little-endian bytes are decoded and printed back with round-trip precision, so the suspect
reader's cast to the datatype gives the same bits.
"""

from __future__ import annotations

import json
import math
import re
from urllib.parse import quote

import numpy as np

from hspi_onnx import oip

from .transport import QueryError, Reply, Transport, one_line


def split_url(url: str, model: str | None) -> tuple[str, str]:
    """(server base URL, model name): ``--model`` or the ``/v2/models/NAME`` the URL ends in."""
    found = re.match(r"^(.*?)/v2/models/([^/]+)(?:/versions/[^/]+)?(?:/infer)?/?$", url)
    if found:
        url, model = found.group(1), model or found.group(2)
    if not model:
        raise QueryError("name the served model with --model NAME (or give URL/v2/models/NAME)")
    return url, model


def _path(model: str, suffix: str = "") -> str:
    return f"/v2/models/{quote(model, safe='')}{suffix}"


def _error_text(reply: Reply) -> str:
    if reply.content_type == "text/html":
        return "an HTML page"
    try:
        doc = json.loads(reply.body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return repr(one_line(doc["error"].encode(), 100))
    except ValueError:
        pass
    return repr(one_line(reply.body, 100)) if reply.body.strip() else "an empty body"


def metadata(transport: Transport, model: str) -> dict | None:
    """The model's metadata (GET /v2/models/NAME), or None when the server does not give it."""
    reply = transport.request("GET", _path(model))
    if reply.status == 404:
        raise QueryError(
            f"{transport.shown}: the server does not serve model {model!r} (HTTP 404, {_error_text(reply)})"
        )
    if reply.status in (401, 403):
        raise QueryError(
            f"{transport.shown}: HTTP {reply.status}, not authorized (give the token's variable with --auth-env)"
        )
    if reply.status != 200:
        return None
    try:
        doc = json.loads(reply.body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _specs(meta: dict | None, key: str) -> list[dict]:
    items = (meta or {}).get(key)
    return (
        [t for t in items if isinstance(t, dict) and isinstance(t.get("name"), str)] if isinstance(items, list) else []
    )


def input_names(probe_names: list[str], meta: dict | None) -> dict[str, str]:
    """Probe-set input name -> the server's input name (a probe set of one unnamed input takes the
    server's one input)."""
    served = [t["name"] for t in _specs(meta, "inputs")]
    if len(probe_names) == 1 and len(served) == 1:
        return {probe_names[0]: served[0]}
    if "" in probe_names:
        raise QueryError(
            "the probe set names no input and the server's metadata does not name exactly one; "
            "remake the probe set with hspi probes make"
        )
    return {n: n for n in probe_names}


def request_body(
    inputs: dict[str, np.ndarray], names: dict[str, str], request_id: str, binary: bool, outputs: list[str] | None
) -> bytes:
    tensors = []
    for key, x in inputs.items():
        dt = oip.datatype(x.dtype)
        if dt is None or dt == "BF16":
            raise QueryError(f"input {key!r} has dtype {x.dtype}, which KServe v2 cannot carry")
        tensors.append({"name": names[key], "shape": list(x.shape), "datatype": dt, "data": x.ravel().tolist()})
    doc: dict = {"id": request_id, "inputs": tensors}
    if outputs:
        doc["outputs"] = [{"name": n, **({"parameters": {"binary_data": True}} if binary else {})} for n in outputs]
    if binary:
        doc["parameters"] = {"binary_data_output": True}
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def _float_constant(name: str) -> float:
    return float(name.lower().replace("infinity", "inf"))


def _split(reply: Reply, where: str) -> tuple[dict, bytes]:
    """The JSON header of a 200 answer holding outputs, and the binary data after it."""
    if reply.status != 200:
        raise QueryError(f"{where}: HTTP {reply.status} ({_error_text(reply)})")
    if reply.content_type == "text/html":
        raise QueryError(f"{where}: the server answered with an HTML page, not a KServe v2 response")
    body, rest = reply.body, b""
    header_len = reply.raw_headers.get("inference-header-content-length")
    if header_len is not None:
        if not header_len.isdigit() or int(header_len) > len(body):
            raise QueryError(
                f"{where}: Inference-Header-Content-Length {header_len[:20]!r} does not fit a body of {len(body)} bytes"
            )
        body, rest = body[: int(header_len)], body[int(header_len) :]
    try:
        doc = json.loads(body, parse_constant=_float_constant)
    except (ValueError, RecursionError):
        raise QueryError(f"{where}: the response is not complete JSON ({len(body)} bytes; truncated?)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list) or not doc["outputs"]:
        what = (
            f"error {one_line(str(doc['error']).encode(), 100)!r}"
            if isinstance(doc, dict) and "error" in doc
            else "no outputs"
        )
        raise QueryError(f"{where}: the response holds {what}")
    return doc, rest


def binary_outputs(reply: Reply, where: str, rows: int, names: list[str]) -> dict[str, np.ndarray]:
    """Every output of a binary answer (``binary_data_output``), by name in ``names``' order,
    as arrays of ``rows`` rows in their own datatype: the runtime's bits, NaN and Inf included."""
    doc, rest = _split(reply, where)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for o in doc["outputs"]:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not isinstance(o.get("parameters"), dict):
            raise QueryError(f"{where}: an output without a name or binary parameters")
        name, dt, shape, size = o["name"], o.get("datatype"), o.get("shape"), o["parameters"].get("binary_data_size")
        if (
            dt not in oip.DATATYPES
            or not isinstance(shape, list)
            or not shape
            or shape[0] != rows
            or not all(isinstance(x, int) and x >= 0 for x in shape)
        ):
            raise QueryError(
                f"{where}: output {name[:40]!r} has datatype {str(dt)[:16]} and shape {str(shape)[:40]} for {rows} rows"
            )
        if (
            not isinstance(size, int)
            or size != math.prod(shape) * oip.numpy_dtype(dt).itemsize
            or offset + size > len(rest)
        ):
            raise QueryError(
                f"{where}: output {name[:40]!r} is not binary data of its shape (binary_data_output ignored?)"
            )
        out[name] = oip.from_le_bytes(rest[offset : offset + size], dt).reshape(shape)
        offset += size
    if offset != len(rest) or sorted(out) != sorted(names):
        raise QueryError(f"{where}: the answer holds outputs {sorted(out)[:4]}, the model has {names[:4]}")
    return {n: out[n] for n in names}


def label_of(doc: dict, row: int = 0) -> int:
    """The top-1 label of one answered row: an integer output's value, else the argmax of the
    first output (ties to the lower index, as the matcher takes it)."""
    out = doc["outputs"]
    from hspi_onnx.forms import top_indices

    labels = [o for o in out if o["datatype"] in oip.LABEL_DATATYPES]
    if labels:
        return int(labels[0]["data"][row])
    first = np.asarray(out[0]["data"], np.float64).reshape(out[0]["shape"][0], -1)[row : row + 1]
    return int(top_indices(first, 1)[0, 0])


def parse_answer(reply: Reply, where: str, probe_ids: list[int], expected: list[str] | None) -> dict:
    """The answer to one request as a suspect-file response (without our parameters): every output
    a float tensor of ``len(probe_ids)`` rows, ``data`` flat and printed with round-trip precision."""
    doc, rest = _split(reply, where)
    if expected and len(doc["outputs"]) != len(expected):
        raise QueryError(
            f"{where}: the response holds {len(doc['outputs'])} outputs, the model's metadata names "
            f"{len(expected)} ({', '.join(expected[:4])})"
        )
    state = {"offset": 0}
    outputs = [_tensor(o, rest, state, where, probe_ids) for o in doc["outputs"]]
    if state["offset"] != len(rest):
        raise QueryError(f"{where}: {len(rest) - state['offset']} bytes of binary data belong to no output")
    answer = {k: doc[k] for k in ("model_name", "model_version", "id") if isinstance(doc.get(k), str)}
    return {**answer, "outputs": outputs}


def _tensor(o, rest: bytes, state: dict, where: str, probe_ids: list[int]) -> dict:
    if not isinstance(o, dict) or not isinstance(o.get("name"), str):
        raise QueryError(f"{where}: an output tensor without a name")
    name, dt, shape = o["name"], o.get("datatype"), o.get("shape")
    what = f"{where}: output {name[:40]!r}"
    label = dt in oip.LABEL_DATATYPES  # a label-only service's answer: one class index per row
    if dt not in oip.FLOAT_DATATYPES and not label:
        raise QueryError(
            f"{what} has datatype {str(dt)[:16]}; only FP32/FP16/FP64/BF16 outputs or integer labels "
            "can be matched (pick outputs with --output)"
        )
    assert isinstance(dt, str)  # one of FLOAT_DATATYPES or LABEL_DATATYPES
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise QueryError(f"{what} has no valid shape")
    if shape[0] != len(probe_ids):
        raise QueryError(f"{what} has shape {shape} for a batch of {len(probe_ids)} probes")
    count = math.prod(shape)
    size = (o.get("parameters") or {}).get("binary_data_size") if isinstance(o.get("parameters"), dict) else None
    if size is not None:
        width = oip.numpy_dtype(dt).itemsize
        if not isinstance(size, int) or size != count * width:
            raise QueryError(f"{what}: binary_data_size {size} does not fit shape {shape} of {dt}")
        chunk = rest[state["offset"] : state["offset"] + size]
        if len(chunk) != size:
            raise QueryError(f"{what}: binary data truncated ({len(chunk)} of {size} bytes)")
        state["offset"] += size
        values = oip.from_le_bytes(chunk, dt).astype(np.float64)
    else:
        values = _flat(o.get("data"), what)
    if values.size != count:
        raise QueryError(f"{what} holds {values.size} values, its shape {shape} declares {count}")
    if label:
        if (
            count != len(probe_ids)
            or not np.isfinite(values).all()
            or (values != np.round(values)).any()
            or (values < 0).any()
        ):
            raise QueryError(f"{what}: an integer output must hold one non-negative label per probe")
        return {"name": name, "datatype": dt, "shape": shape, "data": [int(v) for v in values]}
    # NaN and Inf are kept (written as JSON's NaN / Infinity): an overflow is evidence of precision
    # float64 printed by repr reads back as the same double, so casting to dt restores the bits
    return {"name": name, "datatype": dt, "shape": shape, "data": oip.json_values(values)}


def _flat(data, what: str) -> np.ndarray:
    if not isinstance(data, list):
        raise QueryError(f"{what} has no data list")
    try:
        arr = np.array(data, dtype=np.float64)
    except (ValueError, TypeError):
        raise QueryError(f"{what} holds something other than numbers in a regular array") from None
    return arr.ravel()


def infer_path(model: str) -> str:
    return _path(model, "/infer")


def output_names(meta: dict | None) -> list[str]:
    return [t["name"] for t in _specs(meta, "outputs")]
