"""Suspects of KServe v2 inference responses (and requests with their responses)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hspi_onnx import oip
from hspi_onnx.match import printed

from .core import (
    FLOAT_DTYPES,
    MAX_INPUTS,
    MAX_PER_QUERY,
    MAX_QUERIES,
    MAX_VALUES,
    Suspect,
    _check_ids,
    _check_inputs,
    _check_name,
    _check_output_name,
    _check_outputs,
    _check_values,
    _fail,
)
from .jsonvalues import _cast, _numbers, _precision


def _tensor(
    path: Path, k: int, o: dict, state: dict, what: str = "response", texts: dict | None = None
) -> tuple[str, np.ndarray, int]:
    """(tensor name, values (batch, *shape) in the declared dtype, batch) of one KServe tensor:
    an output (a float datatype; ``texts`` collects its numbers as printed) or, with ``what``
    "request", an input of any numeric datatype."""
    name = _check_output_name(path, o.get("name", ""))
    allowed = (
        oip.FLOAT_DATATYPES
        if what == "response"
        else oip.LABEL_DATATYPES
        if what == "label"
        else tuple(t for t in oip.DATATYPES if t != "BOOL")
    )
    dt = oip.DATATYPES.get(o["datatype"]) if o.get("datatype") in allowed else None
    if dt is None:
        _fail(path, f"{what} {k}: datatype {str(o.get('datatype'))[:16]!r} is not one of {', '.join(allowed)}")
    if state["dtypes"].setdefault(name, dt) != dt:
        _fail(path, f"{what} {k}: datatype of {name[:40]!r} differs from {what} 0")
    shp = o.get("shape")
    if (
        not isinstance(shp, list)
        or not 1 <= len(shp) <= 8
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_PER_QUERY for s in shp)
    ):
        _fail(path, f"{what} {k}: shape must be a list of positive integers")
    count = math.prod(shp)
    state["total"] += count
    if count > MAX_PER_QUERY * 64 or state["total"] > MAX_VALUES:
        _fail(path, f"{what} {k}: declares {count} values, over the limit")
    integer = dt not in FLOAT_DTYPES
    mine = None if texts is None or integer else texts.setdefault(name, [])
    data = _numbers(path, o.get("data"), f"{what} {k} data", integer=integer, texts=mine)
    if data.size != count:
        _fail(path, f"{what} {k}: data holds {data.size} values, shape {shp} declares {count}")
    row_shape = tuple(shp[1:]) or (1,)
    if state["shapes"].setdefault(name, row_shape) != row_shape:
        _fail(path, f"{what} {k}: shape of {name[:40]!r} differs from {what} 0")
    if integer:
        info = np.iinfo(oip.numpy_dtype(o["datatype"]))
        if data.size and (data.min() < info.min or data.max() > info.max):
            _fail(path, f"{what} {k}: values of {name[:40]!r} overflow {dt}")
        values = data.astype(dt)
    else:
        values = _cast(path, data, dt)
    return name, values.reshape(shp[0], *row_shape), shp[0]


def _kserve_pairs(path: Path, docs: list) -> list[tuple[dict, dict]]:
    """(request, response) pairs of a KServe payload log: records holding both
    (``{"request": ..., "response": ...}``), or requests and responses as records of their own,
    paired by their ``id`` (a v2 response carries its request's id); first seen first."""
    pairs: dict = {}
    for k, d in enumerate(docs):
        if isinstance(d.get("request"), dict) and isinstance(d.get("response"), dict):
            pairs[("record", k)] = [d["request"], d["response"]]
            continue
        j = 0 if "inputs" in d else 1 if "outputs" in d else None
        rid = d.get("id")
        if j is None or not isinstance(rid, str) or not 0 < len(rid) <= 128:
            _fail(path, f"record {k}: neither a request/response pair nor a request or response with an id")
        slot = pairs.setdefault(("id", rid), [None, None])
        if slot[j] is not None:
            _fail(path, f"record {k}: a second {('request', 'response')[j]} with id {rid[:40]!r}")
        slot[j] = d
    for (_, key), (req, resp) in pairs.items():
        if req is None or resp is None:
            _fail(path, f"id {str(key)[:40]!r} has a {'response' if req is None else 'request'} only")
    return [(req, resp) for req, resp in pairs.values()]


def _kserve(path: Path, docs: list) -> Suspect:
    """KServe v2 responses, or a payload log of requests with their responses (the inputs ride
    with the outputs: the queries are its rows, in order, unless the responses number them)."""
    log = any("inputs" in d or "request" in d for d in docs)
    pairs = _kserve_pairs(path, docs) if log else [(None, d) for d in docs]
    if len(pairs) > MAX_QUERIES:
        _fail(path, f"holds more than {MAX_QUERIES} queries")
    ids: list[int] = []
    rows: dict[str, list[np.ndarray]] = {}
    feeds: dict[str, list[np.ndarray]] = {}
    texts: dict[str, list[str]] = {}
    probes = model = None
    state = {"dtypes": {}, "shapes": {}, "total": 0}
    in_state = {"dtypes": {}, "shapes": {}, "total": 0}
    for k, (req, doc) in enumerate(pairs):
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            _fail(path, f"response {k}: parameters must be an object")
        p = params.get("probe_set", probes)
        if (p is None and not log) or (probes is not None and p != probes):
            _fail(
                path,
                f"response {k}: "
                + (
                    "names no probe set (parameters.probe_set)"
                    if p is None
                    else "names a different probe set than response 0"
                ),
            )
        probes = _check_name(path, p, "probe set", True) if p is not None else None
        m = params.get("model", model)  # the server's own model_name need not be the DB's name
        model = _check_name(path, m, "model", False) if m is not None else model
        outs = doc.get("outputs")
        if not isinstance(outs, list) or not outs or not all(isinstance(o, dict) for o in outs) or len(outs) > 64:
            _fail(path, f"response {k}: outputs must be a list of tensors")
        if "output" in params:  # the client asked for one output only
            outs = [o for o in outs if o.get("name") == params["output"]]
            if len(outs) != 1:
                _fail(path, f"response {k}: parameters.output names no single output of the response")
        labels = all(o.get("datatype") in oip.LABEL_DATATYPES for o in outs)  # a label-only service
        if state.setdefault("labels", labels) != labels:
            _fail(path, f"response {k}: labels and values mixed across responses")
        got = [_tensor(path, k, o, state, what="label" if labels else "response", texts=texts) for o in outs]
        names = [g[0] for g in got]
        if len(set(names)) != len(names):
            _fail(path, f"response {k}: two outputs of one name")
        if rows and set(names) != set(rows):
            _fail(path, f"response {k}: outputs {sorted(names)[:4]} differ from response 0's")
        batch = got[0][2]
        if any(g[2] != batch for g in got):
            _fail(path, f"response {k}: outputs disagree on the batch size")
        if req is not None:
            _request_inputs(path, k, req, in_state, batch, feeds)
        pid = params.get("probe_ids")
        if pid is None and log:
            pid = list(range(len(ids), len(ids) + batch))
        elif pid is None:
            rid = doc.get("id")
            if batch != 1 or not isinstance(rid, str) or not rid.isdigit() or len(rid) > 12:
                _fail(
                    path, f"response {k}: give the probe ids in parameters.probe_ids (or the id of a batch-1 response)"
                )
            pid = [int(rid)]
        pid_arr = _numbers(path, pid, f"response {k} probe_ids", integer=True)
        if pid_arr.size != batch:
            _fail(path, f"response {k}: {pid_arr.size} probe ids for a batch of {batch}")
        ids += pid_arr.tolist()
        for name, values, _ in got:
            rows.setdefault(name, []).append(values)
    ids_arr = _check_ids(path, np.array(ids, dtype=np.int64))
    outputs = {name: np.concatenate(parts) for name, parts in rows.items()}
    inputs = {name: np.concatenate(parts) for name, parts in feeds.items()} if log else None
    if state.get("labels"):  # top-1 labels only: form argmax
        if len(outputs) != 1 or next(iter(outputs.values())).reshape(len(ids_arr), -1).shape[1] != 1:
            _fail(path, "a label-only response holds one integer tensor, one label per row")
        index = next(iter(outputs.values())).reshape(len(ids_arr), 1).astype(np.int64)
        _check_values(path, None, index, len(ids_arr), "argmax")
        if inputs is not None:
            _check_inputs(path, inputs, len(ids_arr))
        return Suspect(str(path), "kserve", probes, model, "argmax", ids_arr, {}, index, "", None, inputs)
    _check_outputs(path, outputs, None, len(ids_arr), "raw")
    if inputs is not None:
        _check_inputs(path, inputs, len(ids_arr))
    first = next(iter(outputs))
    exact = printed.exact_in(texts[first], outputs[first].dtype)
    precision = None if exact else _precision(path, texts[first], outputs[first].shape)
    return Suspect(
        str(path),
        "kserve",
        probes,
        model,
        "raw",
        ids_arr,
        outputs,
        None,
        first,
        precision if precision is not None and precision.mode == printed.FIXED else None,
        inputs,
    )


def _request_inputs(path: Path, k: int, req: dict, state: dict, batch: int, feeds: dict) -> None:
    """The input tensors of request ``k``, appended to ``feeds``; their batch must be the response's."""
    ins = req.get("inputs")
    if not isinstance(ins, list) or not ins or not all(isinstance(t, dict) for t in ins) or len(ins) > MAX_INPUTS:
        _fail(path, f"request {k}: inputs must be a list of 1 to {MAX_INPUTS} tensors")
    got = [_tensor(path, k, t, state, what="request") for t in ins]
    names = [g[0] for g in got]
    if len(set(names)) != len(names) or (feeds and set(names) != set(feeds)):
        _fail(path, f"request {k}: inputs {sorted(names)[:4]} repeat a name or differ from request 0's")
    if any(g[2] != batch for g in got):
        _fail(path, f"request {k}: a batch of {got[0][2]} inputs answered by {batch} outputs")
    for name, values, _ in got:
        feeds.setdefault(name, []).append(values)
