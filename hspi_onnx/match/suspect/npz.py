"""Suspects in .npz files: what `hspi run` writes (raw outputs, ids, digests, a JSON meta record)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hspi_onnx.outputs import OUTPUT_MEMBERS, read_outputs
from hspi_onnx.safenpz import read_npz

from .core import (
    BadSuspectError,
    Suspect,
    _check_form,
    _check_ids,
    _check_inputs,
    _check_name,
    _check_output_name,
    _check_outputs,
    _fail,
)

# -- .npz ------------------------------------------------------------------------------------
INPUT_MEMBERS = r"input_\d{1,2}"


def _load_npz(path: Path) -> Suspect:
    arrays, meta = read_npz(
        path,
        set(),
        "suspect file",
        BadSuspectError,
        optional=frozenset({"ids", "outputs", "digests", "index", "inputs"}),
        pattern=f"{OUTPUT_MEMBERS}|{INPUT_MEMBERS}",
        meta_required=False,
    )
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
    if (
        not isinstance(names, list)
        or len(names) != len(members)
        or len(set(map(str, names))) != len(names)
        or not all(isinstance(x, str) for x in names)
    ):
        _fail(path, f"meta.input_names must name each of its {len(members)} input arrays once")
    inputs = {_check_output_name(path, nm): arrays[m] for nm, m in zip(names, members)}
    if any(x.ndim < 1 or x.dtype.kind not in "biuf" for x in inputs.values()):
        _fail(path, "inputs must be numeric arrays with one row per query")
    if len({len(x) for x in inputs.values()}) != 1:
        _fail(path, "inputs differ in their number of rows")
    return inputs
