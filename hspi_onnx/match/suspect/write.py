"""Writing suspect files in every format (tests, demos, `hspi run`, `hspi query`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hspi_onnx import oip
from hspi_onnx.forms import View, degrade

from .core import LOGPROBS_FORMAT, PLAIN_FORMAT


# -- writing ---------------------------------------------------------------------------------
def _named(outputs) -> dict[str, np.ndarray]:
    return dict(outputs) if isinstance(outputs, dict) else {"": outputs}


def write_plain(
    path: str | Path,
    probes: str,
    model: str | None,
    form: str,
    ids: np.ndarray,
    view: View,
    dtype: str | None = None,
    output: str = "",
) -> Path:
    """The plain JSON form of a (degraded) view of one output; floats printed so they read back exactly."""
    queries = []
    for k, pid in enumerate(ids.tolist()):
        q: dict = {"probe_id": int(pid)}
        if view.values is not None:
            q["values"] = [float(v) for v in np.asarray(view.values[k], dtype=np.float64)]
        if view.index is not None:
            q["index"] = [int(i) for i in view.index[k]]
        queries.append(q)
    doc: dict[str, object] = {"format": PLAIN_FORMAT, "probe_set": probes, "form": form, "queries": queries}
    if model:
        doc["model"] = model
    if output:
        doc["output"] = output
    if form == "raw":
        doc["dtype"] = dtype
    path = Path(path)
    path.write_text(json.dumps(doc), "utf-8")
    return path


def write_kserve(path: str | Path, probes: str, model: str, ids: np.ndarray, outputs, batch: int = 1) -> Path:
    """KServe v2 responses as JSON Lines, ``batch`` probes per response, every output named
    (an array alone is left unnamed: the model's first output)."""
    named = _named(outputs)
    lines = []
    for s in range(0, len(ids), batch):
        tensors = [
            {
                "name": name,
                "datatype": oip.datatype(v.dtype),
                "shape": list(v[s : s + batch].shape),
                "data": oip.json_values(v[s : s + batch]),
            }
            for name, v in named.items()
        ]
        lines.append(
            json.dumps(
                {
                    "model_name": model,
                    "id": str(int(ids[s])),
                    "parameters": {
                        "probe_set": probes,
                        "model": model,
                        "probe_ids": [int(i) for i in ids[s : s + batch]],
                    },
                    "outputs": tensors,
                }
            )
        )
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_logprobs(
    path: str | Path, probes: str, ids: np.ndarray, outputs: np.ndarray, k: int = 5, output: str = ""
) -> Path:
    """``hspi-logprobs/1`` lines of one output's logits: per probe one token, the argmax, with
    the top ``k`` log-probabilities (float64 log-softmax), as an LLM API returns them."""
    view = degrade(outputs, "logprobs", k)
    assert view.values is not None and view.index is not None  # the logprobs form has both
    lines = []
    for q, pid in enumerate(ids.tolist()):
        top = [[int(i), float(v)] for i, v in zip(view.index[q], view.values[q])]
        doc = {
            "format": LOGPROBS_FORMAT,
            "parameters": {"probe_set": probes, "probe_ids": [int(pid)]},
            "tokens": [{"id": top[0][0], "logprob": top[0][1], "top": top}],
        }
        lines.append(json.dumps({**doc, "output": output} if output else doc))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_npz(path: str | Path, probes_sha256: str, model_sha256: str | None, ids: np.ndarray, outputs) -> Path:
    """Raw outputs as a suspect .npz: what a client of a black-box service holds (no platform);
    ``outputs`` maps output names to arrays (an array alone is left unnamed: the model's first output)."""
    from hspi_onnx.outputs import output_arrays
    from hspi_onnx.safenpz import save_npz

    named = _named(outputs)
    meta = {
        "format": PLAIN_FORMAT,
        "probes_sha256": probes_sha256,
        "form": "raw",
        "outputs": [{"name": k, "dtype": str(v.dtype)} for k, v in named.items()],
    }
    if model_sha256:
        meta["model_sha256"] = model_sha256
    return save_npz(path, meta, ids=np.asarray(ids, np.int64), **output_arrays(named))
