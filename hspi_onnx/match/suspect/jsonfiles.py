"""A JSON suspect file: read once, bounded, and handed to the format it is."""

from __future__ import annotations

from pathlib import Path

from hspi_onnx.match import printed

from .core import LOGPROBS_FORMAT, MAX_JSON_BYTES, PLAIN_FORMAT, Suspect, _fail
from .jsonvalues import _parse_json, _reject_constant
from .kserve import _kserve
from .logprobs import _logprobs
from .plain import _plain


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
    if not docs or not all(isinstance(d, dict) and ("outputs" in d or "inputs" in d or "response" in d) for d in docs):
        _fail(
            path,
            f"is neither KServe v2 inference responses (or requests with their responses) "
            f"nor a {PLAIN_FORMAT} document",
        )
    return _kserve(path, docs)
