"""OpenAI-compatible endpoints (``/v1/completions``, ``/v1/chat/completions``) for language
models: each probe's token ids are the prompt, the answer's per-token top-k log-probabilities
with their token ids are the suspect (``hspi-logprobs/1`` lines, docs/formats.md).

Completions take the token ids themselves (OpenAI's token-array prompts, served by vLLM and
``hspi serve``), several probes per request with ``--batch``. A chat takes text, so each probe's
ids must be UTF-8 bytes (a byte-level vocabulary, like the zoo's ``lm``) and go one per request.
Token ids come back as ``token_id:N`` strings (vLLM's ``return_tokens_as_token_ids``, which is
asked for unless ``token_ids`` is off) or, in a chat, as a token's ``bytes`` when it is one byte.
Greedy and deterministic: ``temperature`` 0.
"""

from __future__ import annotations

import json
import math
import re

from .transport import QueryError, Reply, Transport, one_line

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
LOGPROBS_FORMAT = "hspi-logprobs/1"


def split_url(url: str) -> str:
    """The server's base URL: ``url`` without a trailing ``/v1[/completions|/chat/completions]``."""
    return re.sub(r"/v1(/completions|/chat/completions)?/?$", "", url.rstrip("/"))


def served_model(transport: Transport, model: str | None) -> str:
    """``model``, or the server's only model (GET /v1/models)."""
    if model:
        return model
    reply = transport.request("GET", "/v1/models")
    try:
        names = [m["id"] for m in json.loads(reply.body)["data"] if isinstance(m.get("id"), str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        names = []
    if reply.status != 200 or len(names) != 1:
        raise QueryError("name the served model with --model NAME (GET /v1/models did not name exactly one)")
    return names[0]


def prompt_ids(probes, row: int) -> list[int]:
    """A probe's token ids (a probe set of language-model prompts: one token input)."""
    if len(probes.inputs) != 1:
        raise QueryError(
            f"the OpenAI protocol sends prompts; probe set {probes.name!r} has "
            f"{len(probes.inputs)} inputs, not one of token ids"
        )
    x = next(iter(probes.inputs.values()))
    if x.dtype.kind not in "iu" or x.ndim != 2:
        raise QueryError(
            f"the OpenAI protocol sends prompts; probe set {probes.name!r} holds {x.dtype} "
            f"inputs of shape {list(x.shape[1:])}, not token ids"
        )
    return [int(t) for t in x[row]]


def request_body(
    endpoint: str, model: str, prompts: list[list[int]], k: int, max_tokens: int, token_ids: bool
) -> bytes:
    doc: dict = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if endpoint == "chat":
        if len(prompts) != 1:
            raise QueryError("a chat request holds one prompt: use --batch 1 with --endpoint chat")
        try:
            text = bytes(prompts[0]).decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            raise QueryError(
                "a chat takes text, and this probe's token ids are not UTF-8 bytes; "
                "use --endpoint completions (token-id prompts)"
            ) from None
        doc.update(messages=[{"role": "user", "content": text}], logprobs=True, top_logprobs=k)
    else:
        doc.update(prompt=prompts if len(prompts) > 1 else prompts[0], logprobs=k)
    if token_ids:
        doc["return_tokens_as_token_ids"] = True
    return json.dumps(doc, separators=(",", ":")).encode()


def _token_id(token, raw_bytes, what: str) -> int:
    if isinstance(token, str):
        found = re.fullmatch(r"token_id:(\d{1,9})", token)
        if found:
            return int(found.group(1))
    if (
        isinstance(raw_bytes, list)
        and len(raw_bytes) == 1
        and isinstance(raw_bytes[0], int)
        and 0 <= raw_bytes[0] < 256
    ):
        return raw_bytes[0]
    raise QueryError(
        f"{what}: token {str(token)[:20]!r} comes without its id; hspi matches token ids "
        "(vLLM's return_tokens_as_token_ids, which hspi asks for unless --no-token-ids)"
    )


def _logprob(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 0:
        raise QueryError(f"{what}: a log-probability must be a number at most 0, not {str(value)[:20]}")
    return float(value)


def _steps_completion(choice: dict, what: str) -> list[dict]:
    lp = choice.get("logprobs")
    if (
        not isinstance(lp, dict)
        or not isinstance(lp.get("top_logprobs"), list)
        or not isinstance(lp.get("tokens"), list)
    ):
        raise QueryError(f"{what}: the choice holds no logprobs (the server ignores logprobs?)")
    steps = []
    for t, (token, chosen, top) in enumerate(zip(lp["tokens"], lp.get("token_logprobs") or [], lp["top_logprobs"])):
        if not isinstance(top, dict) or not top:
            raise QueryError(f"{what}: token {t} has no top log-probabilities")
        steps.append(
            {
                "id": _token_id(token, None, what),
                "logprob": _logprob(chosen, what),
                "top": [[_token_id(s, None, what), _logprob(v, what)] for s, v in top.items()],
            }
        )
    return steps


def _steps_chat(choice: dict, what: str) -> list[dict]:
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        raise QueryError(f"{what}: the choice holds no logprobs.content (the server ignores logprobs?)")
    steps = []
    for t, entry in enumerate(content):
        top = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if not isinstance(top, list) or not top or not all(isinstance(e, dict) for e in top):
            raise QueryError(f"{what}: token {t} has no top log-probabilities")
        steps.append(
            {
                "id": _token_id(entry.get("token"), entry.get("bytes"), what),
                "logprob": _logprob(entry.get("logprob"), what),
                "top": [
                    [_token_id(e.get("token"), e.get("bytes"), what), _logprob(e.get("logprob"), what)] for e in top
                ],
            }
        )
    return steps


def response_doc(reply: Reply, where: str) -> dict:
    """The JSON object of a 200 answer; a clear QueryError for an HTTP error, an HTML page or a
    body that is not complete JSON."""
    if reply.status != 200:
        detail = one_line(reply.body, 100) if reply.body.strip() else "an empty body"
        try:
            err = json.loads(reply.body)["error"]
            detail = one_line(str(err.get("message", err) if isinstance(err, dict) else err).encode(), 100)
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        raise QueryError(
            f"{where}: HTTP {reply.status} ({'an HTML page' if reply.content_type == 'text/html' else repr(detail)})"
        )
    if reply.content_type == "text/html":
        raise QueryError(f"{where}: the server answered with an HTML page, not an OpenAI response")
    try:
        doc = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise QueryError(f"{where}: the response is not complete JSON ({len(reply.body)} bytes; truncated?)") from None
    if not isinstance(doc, dict):
        raise QueryError(f"{where}: the response is not a JSON object")
    return doc


def parse_answer(reply: Reply, where: str, endpoint: str, probe_ids: list[int], k: int, max_tokens: int) -> list[dict]:
    """One ``hspi-logprobs/1`` line per probe (without our parameters); the top log-probabilities
    of every token sorted best first, ties to the lower id (as the DB side sorts them)."""
    doc = response_doc(reply, where)
    choices = doc.get("choices")
    if not isinstance(choices, list) or len(choices) != len(probe_ids) or not all(isinstance(c, dict) for c in choices):
        raise QueryError(
            f"{where}: the response holds {len(choices) if isinstance(choices, list) else 'no'} choices "
            f"for {len(probe_ids)} prompts"
        )
    order = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    meta = {
        key: doc[key]
        for key in ("id", "model", "created", "system_fingerprint")
        if isinstance(doc.get(key), (str, int))
    }
    lines = []
    for pid, choice in zip(probe_ids, order):
        what = f"{where}, probe {pid}"
        steps = (_steps_chat if endpoint == "chat" else _steps_completion)(choice, what)
        if len(steps) != max_tokens:
            raise QueryError(f"{what}: {len(steps)} tokens with log-probabilities, asked for {max_tokens}")
        for s in steps:
            s["top"].sort(key=lambda t: (-t[1], t[0]))
            if len(s["top"]) != k or len({t[0] for t in s["top"]}) != k:
                raise QueryError(f"{what}: {len(s['top'])} top log-probabilities (distinct ids?), asked for {k}")
        lines.append(
            {"format": LOGPROBS_FORMAT, "tokens": steps, "response": meta, "finish_reason": choice.get("finish_reason")}
        )
    return lines


def signature(doc: dict) -> tuple:
    """What every answer of one query shares: tokens per probe and log-probabilities per token."""
    return (doc["format"], len(doc["tokens"]), len(doc["tokens"][0]["top"]))
