"""What every suspect format shares: the Suspect record, the limits, and the checks each
format applies to what it read (hostile input: bounded, one BadSuspectError naming the problem)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from hspi_onnx import oip
from hspi_onnx.errors import HspiError
from hspi_onnx.forms import FORMS, INDEXED, MAX_K, View, top_k
from hspi_onnx.match import printed
from hspi_onnx.outputs import row_digests


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


# -- checks shared by every format -----------------------------------------------------------
def read_bounded(path: str | Path, what: str) -> bytes:
    """The bytes of a JSON-lines file a user brings (``what`` names it in errors): at most
    :data:`MAX_JSON_BYTES`, one clear error when unreadable or larger."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise BadSuspectError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
    if len(data) > MAX_JSON_BYTES:
        raise BadSuspectError(f"{what} {str(path)!r}: is over {MAX_JSON_BYTES >> 20} MiB")
    return data


def _fail(path: Path, msg: str) -> NoReturn:
    raise BadSuspectError(f"suspect file {str(path)!r}: {msg}")


def _check_form(path: Path, form) -> str:
    if not isinstance(form, str) or (form not in FORMS and top_k(form) is None):
        _fail(path, f"unknown output form {str(form)[:40]!r}; forms: {', '.join(FORMS)} (topK for any K up to {MAX_K})")
    return form


def _check_name(path: Path, value, what: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@+=-]{1,128}", value):
        _fail(path, f"must name its {what} (a sha256 or a name)" if value is None else f"has a malformed {what} name")
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
        if str(values.dtype) not in FLOAT_DTYPES and not (form == "raw" and str(values.dtype) in ("int32", "int64")):
            # integers only as raw outputs: a language model's generated and top-k token ids
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


def _check_inputs(path: Path, inputs: dict[str, np.ndarray], n: int) -> None:
    if not 1 <= len(inputs) <= MAX_INPUTS:
        _fail(path, f"holds {len(inputs)} inputs; at most {MAX_INPUTS}")
    for name, x in inputs.items():
        if x.dtype.kind not in "biuf" or x.ndim < 1 or len(x) != n:
            _fail(path, f"input {name[:40]!r} must be a numeric array with one row per query ({n})")
