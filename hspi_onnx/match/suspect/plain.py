"""Suspects in the plain hspi-suspect/1 form: degraded outputs, one entry per query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hspi_onnx.forms import INDEXED, top_k

from .core import (
    FLOAT_DTYPES,
    MAX_PER_QUERY,
    MAX_QUERIES,
    MAX_VALUES,
    Suspect,
    _check_form,
    _check_ids,
    _check_name,
    _check_output_name,
    _check_values,
    _fail,
)
from .jsonvalues import _cast, _numbers, _precision


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
        if not isinstance(dtype, str) or dtype not in FLOAT_DTYPES:  # unhashable JSON ([], {}) too
            _fail(path, f"form raw needs dtype, one of {', '.join(sorted(FLOAT_DTYPES))}")
    else:
        dtype = "float32" if form == "softmax" else "float64"
    ids: list[int] = []
    vals: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    texts: list[str] = []
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
    return Suspect(
        str(path),
        "plain",
        probes,
        model,
        form,
        ids_arr,
        {} if values is None else {output: values},
        index,
        output,
        precision,
    )
