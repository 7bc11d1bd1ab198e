"""Suspects of hspi-logprobs/1 lines: what `hspi query --wire openai` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core import (
    MAX_PER_QUERY,
    MAX_QUERIES,
    MAX_TOP,
    Suspect,
    _check_ids,
    _check_inputs,
    _check_name,
    _check_output_name,
    _check_values,
    _fail,
)
from .jsonvalues import _numbers, _precision


def _logprobs(path: Path, docs: list) -> Suspect:
    """Per-token top-k log-probabilities with token ids, one line per probe (form ``logprobs``)."""
    if len(docs) > MAX_QUERIES:
        _fail(path, f"holds more than {MAX_QUERIES} queries")
    probes = model = None
    output = ""
    ids: list[int] = []
    vals: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    texts: list[str] = []
    prompts: list[np.ndarray] = []
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
                _fail(
                    path,
                    f"line {k + 1}: prompts must hold 1 to {MAX_PER_QUERY} token ids, the same number on every line",
                )
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
        if (
            not isinstance(top, list)
            or not 1 <= len(top) <= MAX_TOP
            or not all(isinstance(t, list) and len(t) == 2 for t in top)
        ):
            _fail(
                path, f"line {k + 1}: the first token's top must be a list of 1 to {MAX_TOP} [token id, logprob] pairs"
            )
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
    return Suspect(
        str(path),
        "openai",
        probes,
        model,
        "logprobs",
        ids_arr,
        {output: values},
        index,
        output,
        _precision(path, texts, values.shape),
        inputs,
    )
