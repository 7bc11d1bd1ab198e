"""Suspect files: outputs of an unknown platform, read as hostile input.

Three formats (docs/formats.md):

``.npz``
    what ``hspi run`` writes: ``outputs`` (raw bytes of the returned dtype), ``ids``, optional
    ``digests`` (checked when present) and ``index`` (top-k / argmax forms), plus a JSON meta
    record naming the probe set (``probes_sha256`` or ``probes_name``) and optionally the model
    and the output form.
``.json`` / ``.jsonl`` of KServe v2 inference responses
    the protocol Triton, KServe and MLServer speak; the probe set and probe ids travel in each
    response's ``parameters`` (``probe_set``, ``probe_ids``) or its ``id``.
``.json`` with ``"format": "hspi-suspect/1"``
    a plain form for degraded outputs: rounded values, softmax probabilities, top-k values and
    indices, or argmax labels, one entry per query.
``.jsonl`` of ``"format": "hspi-logprobs/1"`` lines
    what ``hspi query --wire openai`` writes: per probe, the generated tokens with their
    top-k log-probabilities and token ids (form ``logprobs``); the first token, the only one
    whose input is the probe itself, is what is matched.

Everything is bounded before it is allocated; any problem is one :class:`BadSuspectError`
naming it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx import oip
from hspi_onnx.match import printed
from hspi_onnx.forms import FORMS, INDEXED, MAX_K, View, degrade, top_k
from hspi_onnx.errors import HspiError
from hspi_onnx.outputs import OUTPUT_MEMBERS, read_outputs, row_digests
from hspi_onnx.safenpz import read_npz


class BadSuspectError(HspiError):
    """A suspect file that is missing, malformed, hostile or does not fit the DB."""


MAX_JSON_BYTES = 16 << 20
MAX_QUERIES = 100_000
MAX_VALUES = 1 << 24  # values of all queries together
MAX_PER_QUERY = 1 << 20
PLAIN_FORMAT = "hspi-suspect/1"
LOGPROBS_FORMAT = "hspi-logprobs/1"
MAX_TOP = 1 << 12  # log-probabilities per token
MAX_INPUTS = 16
FLOAT_DTYPES = {oip.DATATYPES[t] for t in oip.FLOAT_DATATYPES}


@dataclass
class Suspect:
    path: str
    source: str  # npz, kserve, plain
    probes: str | None  # the probe set the file names (sha256 or name); None for inputs of its own
    model: str | None  # the model it names (sha256 or name), if any
    form: str
    ids: np.ndarray  # (n,) int64, distinct
    outputs: dict[str, np.ndarray]  # output name ("" when the file names none) -> (n, *shape) raw
    # outputs in their dtype, or (n, k) degraded values (one output); empty for argmax
    index: np.ndarray | None = None  # (n, k) int64 for top-k and argmax
    output: str = ""  # the output a degraded form (or the first raw output) is about
    printed: printed.Precision | None = None  # how a degraded form's numbers were printed (JSON forms)
    inputs: dict[str, np.ndarray] | None = None  # the inputs that produced the outputs, when the file holds them

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def values(self) -> np.ndarray | None:
        return self.outputs.get(self.output)

    @property
    def dtype(self) -> str:
        return str(self.values.dtype) if self.values is not None else "int64"

    def view(self) -> View:
        vals = None if self.values is None else self.values.reshape(len(self.ids), -1)
        return View(vals, self.index)

    def digests(self, name: str | None = None) -> list[str]:
        """Per-query digests of one raw output, computed exactly as the DB computes them."""
        return row_digests(self.outputs[self.output if name is None else name])


def load_suspect(path: str | Path) -> Suspect:
    path = Path(path)
    if not path.is_file():
        raise BadSuspectError(f"suspect file {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return _load_npz(path)
    return _load_json(path)


# -- checks shared by every format -----------------------------------------------------------
def _fail(path: Path, msg: str):
    raise BadSuspectError(f"suspect file {str(path)!r}: {msg}")


def _check_form(path: Path, form) -> str:
    if not isinstance(form, str) or (form not in FORMS and top_k(form) is None):
        _fail(path, f"unknown output form {str(form)[:40]!r}; forms: {', '.join(FORMS)} (topK for any K up to {MAX_K})")
    return form


def _check_name(path: Path, value, what: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@+=-]{1,128}", value):
        _fail(path, f"must name its {what} (a sha256 or a name)" if value is None
              else f"has a malformed {what} name")
    return value


def _check_output_name(path: Path, name) -> str:
    """An output name as a graph names it ("" for none): printable, at most 256 characters."""
    if not isinstance(name, str) or len(name) > 256 or not name.isprintable():
        _fail(path, "has a malformed output name")
    return name


def _check_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        _fail(path, "probe ids must be a 1-D array of integers")
    if len(ids) == 0:
        _fail(path, "holds no queries")
    if len(ids) > MAX_QUERIES:
        _fail(path, f"holds {len(ids)} queries, over the limit of {MAX_QUERIES}")
    ids = ids.astype(np.int64)
    if (ids < 0).any():
        _fail(path, "has negative probe ids")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        _fail(path, f"has duplicate probe ids (e.g. {int(uniq[counts > 1][0])})")
    return ids


def _check_outputs(path: Path, outputs: dict[str, np.ndarray], index: np.ndarray | None, n: int, form: str) -> None:
    if form != "raw" and len(outputs) > 1:
        _fail(path, f"form {form} holds the values of one output, not {len(outputs)}")
    if not outputs:
        _check_values(path, None, index, n, form)
    for values in outputs.values():
        _check_values(path, values, index, n, form)


def _check_values(path: Path, values: np.ndarray | None, index: np.ndarray | None, n: int, form: str) -> None:
    needs_values = form != "argmax"
    needs_index = form in INDEXED or top_k(form) is not None
    if needs_values and values is None:
        _fail(path, f"form {form} needs output values")
    if needs_index and index is None:
        _fail(path, f"form {form} needs indices")
    if values is not None:
        if len(values) != n or values.ndim < 2:
            _fail(path, f"outputs have shape {tuple(values.shape)}, expected ({n}, ...) for {n} probe ids")
        if str(values.dtype) not in FLOAT_DTYPES:
            _fail(path, f"outputs have dtype {values.dtype}; expected a float dtype")
        # NaN and Inf are kept: an fp16 overflow to inf is evidence of the precision
    if index is not None:
        if index.ndim != 2 or len(index) != n or index.dtype.kind not in "iu":
            _fail(path, f"indices must be integers of shape ({n}, k)")
        if (index < 0).any():
            _fail(path, "indices must be non-negative")
        k = 1 if form == "argmax" else top_k(form)
        if k is not None and index.shape[1] != k:
            _fail(path, f"form {form} takes {k} indices per query, the file has {index.shape[1]}")
        if values is not None and values.reshape(n, -1).shape[1] != index.shape[1]:
            _fail(path, "values and indices differ in length")


# -- .npz ------------------------------------------------------------------------------------
INPUT_MEMBERS = r"input_\d{1,2}"


def _load_npz(path: Path) -> Suspect:
    arrays, meta = read_npz(path, set(), "suspect file", BadSuspectError,
                            optional=frozenset({"ids", "outputs", "digests", "index", "inputs"}),
                            pattern=f"{OUTPUT_MEMBERS}|{INPUT_MEMBERS}", meta_required=False)
    inputs = _npz_inputs(path, arrays, meta)
    form = _check_form(path, meta.get("form", "raw"))
    probes = _check_name(path, meta.get("probes_sha256") or meta.get("probes_name"), "probe set", inputs is None)
    model = _check_name(path, meta.get("model_sha256") or meta.get("model_name"), "model", False)
    if "ids" in arrays:
        ids = _check_ids(path, arrays["ids"])
    elif inputs is not None:  # a log of inputs and outputs: the rows are the queries
        ids = _check_ids(path, np.arange(len(next(iter(inputs.values()))), dtype=np.int64))
    else:
        _fail(path, "must hold probe ids (ids), or the inputs that produced its outputs (inputs)")
    outputs: dict[str, np.ndarray] = {}
    if any(k == "outputs" or k.startswith("output_") for k in arrays):
        outputs, checked = read_outputs(arrays, meta, lambda msg: _fail(path, msg))
        if form != "raw" and (checked or len(outputs) != 1):
            _fail(path, f"form {form} holds one output's values and no digests")
    elif "digests" in arrays:
        _fail(path, "has digests but no outputs")
    for name in outputs:
        _check_output_name(path, name)
    index = arrays.get("index")
    index = index.astype(np.int64) if index is not None and index.dtype.kind in "iu" else index
    output = next(iter(outputs), _check_output_name(path, meta.get("output", "")))
    _check_outputs(path, outputs, index, len(ids), form)
    if inputs is not None:
        _check_inputs(path, inputs, len(ids))
    return Suspect(str(path), "npz", probes, model, form, ids, outputs, index, output, inputs=inputs)


def _npz_inputs(path: Path, arrays: dict, meta: dict) -> dict[str, np.ndarray] | None:
    """The suspect's own inputs: ``inputs`` (one input, named by ``meta["input_names"]`` or left
    unnamed) or ``input_0`` ... named in ``meta["input_names"]``; None when it holds none."""
    numbered = sorted((k for k in arrays if re.fullmatch(INPUT_MEMBERS, k)), key=lambda k: int(k[6:]))
    names = meta.get("input_names")
    if "inputs" in arrays:
        if numbered:
            _fail(path, "mixes inputs with input_0 ...")
        names = [""] if names is None else names
        members = ["inputs"]
    elif numbered:
        members = [f"input_{i}" for i in range(len(numbered))]
        if numbered != members:
            _fail(path, "input members must be input_0, input_1, ... without gaps")
    else:
        return None
    if (not isinstance(names, list) or len(names) != len(members) or len(set(map(str, names))) != len(names)
            or not all(isinstance(x, str) for x in names)):
        _fail(path, f"meta.input_names must name each of its {len(members)} input arrays once")
    inputs = {_check_output_name(path, nm): arrays[m] for nm, m in zip(names, members)}
    if any(x.ndim < 1 or x.dtype.kind not in "biuf" for x in inputs.values()):
        _fail(path, "inputs must be numeric arrays with one row per query")
    if len({len(x) for x in inputs.values()}) != 1:
        _fail(path, "inputs differ in their number of rows")
    return inputs


def _check_inputs(path: Path, inputs: dict[str, np.ndarray], n: int) -> None:
    if not 1 <= len(inputs) <= MAX_INPUTS:
        _fail(path, f"holds {len(inputs)} inputs; at most {MAX_INPUTS}")
    for name, x in inputs.items():
        if x.dtype.kind not in "biuf" or x.ndim < 1 or len(x) != n:
            _fail(path, f"input {name[:40]!r} must be a numeric array with one row per query ({n})")


# -- JSON --------------------------------------------------------------------------------------
def _reject_constant(name: str) -> float:
    """NaN, Infinity and -Infinity, as Python's json and many servers print them: evidence, kept."""
    return float(name.replace("Infinity", "inf"))


def _parse_json(path: Path, text: str, budget: list[int] | None = None):
    try:
        return printed.loads(text, budget, parse_constant=_reject_constant)
    except RecursionError:
        _fail(path, "JSON is nested too deeply")
    except ValueError as exc:
        msg = str(exc).split(":")[0][:80]
        _fail(path, f"holds {msg}" if "decimal numbers" in msg else f"is not valid JSON ({msg})")


def _load_json(path: Path) -> Suspect:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        _fail(path, f"is {size} bytes; JSON suspects are limited to {MAX_JSON_BYTES >> 20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        _fail(path, "is neither an .npz nor UTF-8 JSON")
    if not text.strip():
        _fail(path, "is empty")
    try:
        docs = [printed.loads(text, parse_constant=_reject_constant)]
    except RecursionError:
        _fail(path, "JSON is nested too deeply")
    except ValueError:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) < 2:
            _parse_json(path, text)  # raises with the parser's message
        budget = [printed.MAX_FLOATS]  # for the whole file
        docs = [_parse_json(path, ln, budget) for ln in lines]  # JSON Lines
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    if len(docs) == 1 and isinstance(docs[0], dict) and docs[0].get("format") == PLAIN_FORMAT:
        return _plain(path, docs[0])
    if docs and all(isinstance(d, dict) and d.get("format") == LOGPROBS_FORMAT for d in docs):
        return _logprobs(path, docs)
    if not docs or not all(isinstance(d, dict) and ("outputs" in d or "inputs" in d or "response" in d)
                           for d in docs):
        _fail(path, f"is neither KServe v2 inference responses (or requests with their responses) "
                    f"nor a {PLAIN_FORMAT} document")
    return _kserve(path, docs)


def _flatten(path: Path, data, what: str, depth: int, out: list) -> None:
    if depth > 4:
        _fail(path, f"{what} is nested too deeply")
    for v in data:
        if isinstance(v, list):
            _flatten(path, v, what, depth + 1, out)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(path, f"{what} holds a non-number ({type(v).__name__})")
        out.append(v)
    if len(out) > MAX_VALUES:
        _fail(path, f"{what} holds more than {MAX_VALUES} values")


def _numbers(path: Path, data, what: str, integer: bool = False, texts: list | None = None) -> np.ndarray:
    """A flat float64 (or int64) array from a JSON list of numbers (row-major), refusing anything
    else; ``texts`` collects each number as it was printed."""
    if not isinstance(data, list):
        _fail(path, f"{what} must be a list of numbers")
    flat: list = []
    _flatten(path, data, what, 0, flat)
    if texts is not None:
        texts += [printed.text_of(v) for v in flat]
    if integer and not all(isinstance(v, int) for v in flat):
        _fail(path, f"{what} must hold integers")
    try:
        arr = np.array(flat, dtype=np.int64 if integer else np.float64)
    except OverflowError:
        _fail(path, f"{what} holds a number out of range")
    return arr


def _cast(path: Path, x: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = x.astype(oip.numpy_dtype(oip.datatype(dtype)))
    if (np.isfinite(x) & ~np.isfinite(out.astype(np.float64))).any():  # printed finite, yet beyond the dtype
        _fail(path, f"values overflow {dtype}")
    return out


def _tensor(path: Path, k: int, o: dict, state: dict, what: str = "response",
            texts: dict | None = None) -> tuple[str, np.ndarray, int]:
    """(tensor name, values (batch, *shape) in the declared dtype, batch) of one KServe tensor:
    an output (a float datatype; ``texts`` collects its numbers as printed) or, with ``what``
    "request", an input of any numeric datatype."""
    name = _check_output_name(path, o.get("name", ""))
    allowed = (oip.FLOAT_DATATYPES if what == "response" else oip.LABEL_DATATYPES if what == "label"
               else tuple(t for t in oip.DATATYPES if t != "BOOL"))
    dt = oip.DATATYPES.get(o.get("datatype")) if o.get("datatype") in allowed else None
    if dt is None:
        _fail(path, f"{what} {k}: datatype {str(o.get('datatype'))[:16]!r} is not one of {', '.join(allowed)}")
    if state["dtypes"].setdefault(name, dt) != dt:
        _fail(path, f"{what} {k}: datatype of {name[:40]!r} differs from {what} 0")
    shp = o.get("shape")
    if (not isinstance(shp, list) or not 1 <= len(shp) <= 8
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_PER_QUERY for s in shp)):
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
            _fail(path, f"response {k}: " + ("names no probe set (parameters.probe_set)" if p is None
                                              else "names a different probe set than response 0"))
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
                _fail(path, f"response {k}: give the probe ids in parameters.probe_ids (or the id of a batch-1 response)")
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
    return Suspect(str(path), "kserve", probes, model, "raw", ids_arr, outputs, None, first,
                   precision if precision is not None and precision.mode == printed.FIXED else None, inputs)


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


def _logprobs(path: Path, docs: list) -> Suspect:
    """Per-token top-k log-probabilities with token ids, one line per probe (form ``logprobs``)."""
    if len(docs) > MAX_QUERIES:
        _fail(path, f"holds more than {MAX_QUERIES} queries")
    probes = model = None
    output = ""
    ids, vals, idx, texts, prompts = [], [], [], [], []
    with_prompts = "prompt" in docs[0]
    for k, doc in enumerate(docs):
        params = doc.get("parameters")
        if not isinstance(params, dict):
            _fail(path, f"line {k + 1}: parameters must be an object")
        if ("prompt" in doc) != with_prompts:
            _fail(path, f"line {k + 1}: every line or none must carry its prompt")
        if k and params.get("probe_set") != probes:
            _fail(path, f"line {k + 1}: names a different probe set than line 1")
        probes = _check_name(path, params.get("probe_set"), "probe set", not with_prompts)
        if with_prompts:  # the token ids the service was asked: inputs of its own, for --replay
            prompt = _numbers(path, doc["prompt"], f"line {k + 1} prompt", integer=True)
            if prompt.size == 0 or prompt.size > MAX_PER_QUERY or (prompts and prompt.size != prompts[0].size):
                _fail(path, f"line {k + 1}: prompts must hold 1 to {MAX_PER_QUERY} token ids, the same number on every line")
            prompts.append(prompt)
        if params.get("model") is not None:
            model = _check_name(path, params["model"], "model", False)
        if k == 0:
            output = _check_output_name(path, doc.get("output", ""))
        elif doc.get("output", "") != output:
            _fail(path, f"line {k + 1}: names another output than line 1")
        pid = params.get("probe_ids", [k] if with_prompts else None)
        pid = _numbers(path, pid, f"line {k + 1} probe_ids", integer=True)
        tokens = doc.get("tokens")
        if pid.size != 1 or not isinstance(tokens, list) or not tokens or not isinstance(tokens[0], dict):
            _fail(path, f"line {k + 1}: needs one probe id and a non-empty list of tokens")
        top = tokens[0].get("top")
        if not isinstance(top, list) or not 1 <= len(top) <= MAX_TOP or not all(
                isinstance(t, list) and len(t) == 2 for t in top):
            _fail(path, f"line {k + 1}: the first token's top must be a list of 1 to {MAX_TOP} [token id, logprob] pairs")
        i = _numbers(path, [t[0] for t in top], f"line {k + 1} token ids", integer=True)
        v = _numbers(path, [t[1] for t in top], f"line {k + 1} logprobs", texts=texts)
        if idx and i.size != idx[0].size:
            _fail(path, f"line {k + 1}: {i.size} log-probabilities, line 1 has {idx[0].size}")
        ids.append(int(pid[0]))
        idx.append(i)
        vals.append(v)
    ids_arr = _check_ids(path, np.array(ids, dtype=np.int64))
    values, index = np.stack(vals), np.stack(idx)
    if (values > 0).any():
        _fail(path, "holds a log-probability above 0")
    _check_values(path, values, index, len(ids_arr), "logprobs")
    inputs = {"": np.stack(prompts)} if prompts else None
    if inputs is not None:
        _check_inputs(path, inputs, len(ids_arr))
    return Suspect(str(path), "openai", probes, model, "logprobs", ids_arr, {output: values}, index, output,
                   _precision(path, texts, values.shape), inputs)


def _precision(path: Path, texts: list[str], shape) -> printed.Precision:
    try:
        return printed.infer(texts, tuple(shape))
    except ValueError as exc:
        _fail(path, str(exc))


def _plain(path: Path, doc: dict) -> Suspect:
    form = _check_form(path, doc.get("form"))
    probes = _check_name(path, doc.get("probe_set"), "probe set", True)
    model = _check_name(path, doc.get("model"), "model", False)
    output = _check_output_name(path, doc.get("output", ""))
    queries = doc.get("queries")
    if not isinstance(queries, list) or not queries:
        _fail(path, "queries must be a non-empty list")
    if len(queries) > MAX_QUERIES:
        _fail(path, f"holds more than {MAX_QUERIES} queries")
    if form == "raw":
        dtype = doc.get("dtype")
        if dtype not in FLOAT_DTYPES:
            _fail(path, f"form raw needs dtype, one of {', '.join(sorted(FLOAT_DTYPES))}")
    else:
        dtype = "float32" if form == "softmax" else "float64"
    ids, vals, idx, texts = [], [], [], []
    total = 0
    for k, q in enumerate(queries):
        if not isinstance(q, dict):
            _fail(path, f"query {k} must be an object")
        pid = q.get("probe_id")
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 1 << 62:
            _fail(path, f"query {k}: probe_id must be a non-negative integer")
        ids.append(pid)
        if form != "argmax":
            v = _numbers(path, q.get("values"), f"query {k} values", texts=texts)
            total += v.size
            if v.size == 0 or v.size > MAX_PER_QUERY or total > MAX_VALUES:
                _fail(path, f"query {k}: values must hold 1 to {MAX_PER_QUERY} numbers")
            if vals and v.size != vals[0].size:
                _fail(path, f"query {k}: {v.size} values, query 0 has {vals[0].size}")
            vals.append(_cast(path, v, dtype))
        if form in INDEXED or top_k(form) is not None or (form == "softmax" and "index" in q):
            i = _numbers(path, q.get("index"), f"query {k} index", integer=True)
            if idx and i.size != idx[0].size:
                _fail(path, f"query {k}: {i.size} indices, query 0 has {idx[0].size}")
            idx.append(i)
    ids_arr = _check_ids(path, np.array(ids, dtype=np.int64))
    values = np.stack(vals) if vals else None
    index = np.stack(idx) if idx else None
    _check_values(path, values, index, len(ids_arr), form)
    precision = _precision(path, texts, values.shape) if values is not None and form != "raw" else None
    return Suspect(str(path), "plain", probes, model, form, ids_arr, {} if values is None else {output: values},
                   index, output, precision)


# -- writing ---------------------------------------------------------------------------------
def _named(outputs) -> dict[str, np.ndarray]:
    return dict(outputs) if isinstance(outputs, dict) else {"": outputs}


def write_plain(path: str | Path, probes: str, model: str | None, form: str, ids: np.ndarray,
                view: View, dtype: str | None = None, output: str = "") -> Path:
    """The plain JSON form of a (degraded) view of one output; floats printed so they read back exactly."""
    queries = []
    for k, pid in enumerate(ids.tolist()):
        q: dict = {"probe_id": int(pid)}
        if view.values is not None:
            q["values"] = [float(v) for v in np.asarray(view.values[k], dtype=np.float64)]
        if view.index is not None:
            q["index"] = [int(i) for i in view.index[k]]
        queries.append(q)
    doc = {"format": PLAIN_FORMAT, "probe_set": probes, "form": form, "queries": queries}
    if model:
        doc["model"] = model
    if output:
        doc["output"] = output
    if form == "raw":
        doc["dtype"] = dtype
    path = Path(path)
    path.write_text(json.dumps(doc), "utf-8")
    return path


def write_kserve(path: str | Path, probes: str, model: str, ids: np.ndarray, outputs,
                 batch: int = 1) -> Path:
    """KServe v2 responses as JSON Lines, ``batch`` probes per response, every output named
    (an array alone is left unnamed: the model's first output)."""
    named = _named(outputs)
    lines = []
    for s in range(0, len(ids), batch):
        tensors = [{"name": name, "datatype": oip.datatype(v.dtype), "shape": list(v[s:s + batch].shape),
                    "data": oip.json_values(v[s:s + batch])}
                   for name, v in named.items()]
        lines.append(json.dumps({
            "model_name": model, "id": str(int(ids[s])),
            "parameters": {"probe_set": probes, "model": model, "probe_ids": [int(i) for i in ids[s:s + batch]]},
            "outputs": tensors,
        }))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_logprobs(path: str | Path, probes: str, ids: np.ndarray, outputs: np.ndarray, k: int = 5,
                   output: str = "") -> Path:
    """``hspi-logprobs/1`` lines of one output's logits: per probe one token, the argmax, with
    the top ``k`` log-probabilities (float64 log-softmax), as an LLM API returns them."""
    view = degrade(outputs, "logprobs", k)
    lines = []
    for q, pid in enumerate(ids.tolist()):
        top = [[int(i), float(v)] for i, v in zip(view.index[q], view.values[q])]
        doc = {"format": LOGPROBS_FORMAT, "parameters": {"probe_set": probes, "probe_ids": [int(pid)]},
               "tokens": [{"id": top[0][0], "logprob": top[0][1], "top": top}]}
        lines.append(json.dumps({**doc, "output": output} if output else doc))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_npz(path: str | Path, probes_sha256: str, model_sha256: str | None, ids: np.ndarray,
              outputs) -> Path:
    """Raw outputs as a suspect .npz: what a client of a black-box service holds (no platform);
    ``outputs`` maps output names to arrays (an array alone is left unnamed: the model's first output)."""
    from hspi_onnx.outputs import output_arrays
    from hspi_onnx.safenpz import save_npz

    named = _named(outputs)
    meta = {"format": PLAIN_FORMAT, "probes_sha256": probes_sha256, "form": "raw",
            "outputs": [{"name": k, "dtype": str(v.dtype)} for k, v in named.items()]}
    if model_sha256:
        meta["model_sha256"] = model_sha256
    return save_npz(path, meta, ids=np.asarray(ids, np.int64), **output_arrays(named))
