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

from pathlib import Path

from .core import (
    FLOAT_DTYPES,
    LOGPROBS_FORMAT,
    MAX_INPUTS,
    MAX_JSON_BYTES,
    MAX_PER_QUERY,
    MAX_QUERIES,
    MAX_TOP,
    MAX_VALUES,
    PLAIN_FORMAT,
    BadSuspectError,
    Suspect,
)
from .jsonfiles import _load_json
from .npz import _load_npz
from .write import write_kserve, write_logprobs, write_npz, write_plain

__all__ = [
    "BadSuspectError",
    "Suspect",
    "load_suspect",
    "write_kserve",
    "write_logprobs",
    "write_npz",
    "write_plain",
    "FLOAT_DTYPES",
    "LOGPROBS_FORMAT",
    "MAX_INPUTS",
    "MAX_JSON_BYTES",
    "MAX_PER_QUERY",
    "MAX_QUERIES",
    "MAX_TOP",
    "MAX_VALUES",
    "PLAIN_FORMAT",
]


def load_suspect(path: str | Path) -> Suspect:
    path = Path(path)
    if not path.is_file():
        raise BadSuspectError(f"suspect file {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return _load_npz(path)
    return _load_json(path)
