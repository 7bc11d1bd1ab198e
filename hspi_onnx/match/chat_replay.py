"""``hspi match --replay LOG`` for a language model: logged chat traffic (OpenAI request and
response JSON, one exchange per line) teacher-forced on the candidate stacks.

Each logged exchange becomes a chat probe of its own: the request's messages through the model's
chat template, and the logged answer as the continuation to score (``forced_ids``): its token ids
from the logged log-probabilities where the server returned them (printed tokens mapped back with
the model's tokenizer), else the answer's text encoded by the tokenizer, plus the stop token when
the server stopped; at most the DB's ``new_tokens``. Every DB platform of the model this machine
runs is built over that probe set into the DB (cached: a second replay of the same log runs
nothing), then the log is matched against those forced rows:

* with log-probabilities: the logged top alternatives against each platform's, position by
  position (server-normalized, compared by the logits' differences; :mod:`.generation`): the
  exact stack;
* greedy (``temperature`` 0) text without log-probabilities: the platforms whose own top-1 is the
  logged token at every position, i.e. the stacks that produce exactly that text;
* sampled text without log-probabilities: likelihood evidence (:mod:`.likelihood`): each stack's
  log-likelihood of the logged tokens, the stacks a calibrated likelihood-ratio bound rejects,
  and the tokens each rejection needed. It needs what the DB recorded: temperature 1 and no
  ``top_p``/``top_k`` truncation; other sampling settings are refused by name.

The log format, one JSON object per line::

    {"request": {"model": ..., "messages": [...], "temperature": 0, ...},
     "response": {"choices": [{"message": {"content": "..."}, "logprobs": {...}, "finish_reason": ...}], ...}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.match.generation import GenerationQuery, GenerationSuspect
from hspi_onnx.match.suspect.core import BadSuspectError, read_bounded

MAX_EXCHANGES = 10_000


@dataclass
class LoggedChat:
    messages: list[dict]
    text: str
    finish: str | None
    greedy: bool
    content: list | None  # the response's logprobs.content, when logged
    unscorable: str | None = None  # why sampled answers of this request have no likelihood here


def is_chat_log(path: str | Path) -> bool:
    """Whether ``path`` starts like a log of chat requests with their responses."""
    try:
        with open(path, "rb") as f:
            head = f.readline(1 << 20)
        doc = json.loads(head)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("request"), dict) and "messages" in doc["request"]


def read_chat_log(path: str | Path) -> list[LoggedChat]:
    """The logged exchanges, checked as hostile input (one clear error naming the line)."""
    from hspi_onnx.errors import BadProbesError
    from hspi_onnx.inputs.chats import check_chat

    def fail(msg: str) -> NoReturn:
        raise BadSuspectError(f"chat log {str(path)!r}: {msg}")

    data = read_bounded(path, "chat log")
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if not 1 <= len(lines) <= MAX_EXCHANGES:
        fail(f"needs 1 to {MAX_EXCHANGES} exchanges")
    out = []
    for n, line in enumerate(lines, 1):
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            fail(f"line {n} is not JSON")
        req, resp = (doc.get("request"), doc.get("response")) if isinstance(doc, dict) else (None, None)
        if not isinstance(req, dict) or not isinstance(resp, dict):
            fail(f"line {n}: needs a request and a response object")
        try:
            messages = check_chat(req.get("messages"), f"line {n}")
        except BadProbesError as exc:
            fail(str(exc))
        choices = resp.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            fail(f"line {n}: the response needs exactly one choice")
        message = choices[0].get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str) or len(text) > 1 << 20:
            fail(f"line {n}: the choice has no text content")
        lp = choices[0].get("logprobs")
        content = lp.get("content") if isinstance(lp, dict) and isinstance(lp.get("content"), list) else None
        temperature = req.get("temperature", 1)  # OpenAI's default is 1: sampled
        greedy = not isinstance(temperature, bool) and isinstance(temperature, (int, float)) and temperature == 0
        why = None
        if not greedy and temperature != 1:
            why = f"temperature {str(temperature)[:20]}"
        for key, neutral in (("top_p", 1), ("top_k", None), ("min_p", 0)):
            if key in req and req[key] not in (neutral, None) and not (key == "top_k" and req[key] in (0, -1)):
                why = f"{key} {str(req[key])[:20]}"
        out.append(LoggedChat(messages, text, choices[0].get("finish_reason"), greedy, content, why))
    return out


def _continuation(chat: LoggedChat, tokens, tokenizer, spec, where: str) -> tuple[list[int], list | None]:
    """(the answer's token ids to force, the logged alternatives per token or None)."""
    from hspi_onnx.inputs.tokenmap import UnknownToken

    alts = None
    ids: list[int] = []
    if chat.content:
        try:
            picked = [tokens.lookup(e.get("token"), e.get("bytes")) for e in chat.content if isinstance(e, dict)]
        except UnknownToken as exc:
            raise BadSuspectError(f"{where}: {exc}") from None
        if len(picked) == len(chat.content) and all(isinstance(t, int) for t in picked):
            ids, alts = [int(t) for t in picked], chat.content
    if not ids:  # no log-probabilities, or tokens several ids print: the text, as the tokenizer encodes it
        ids = [int(t) for t in tokenizer.encode(chat.text, add_special_tokens=False)]
        alts = None if not chat.content else alts
    if chat.finish == "stop" and spec.stop and (not ids or ids[-1] not in spec.stop):
        ids.append(spec.stop[0])
    if not ids:
        raise BadSuspectError(f"{where}: an empty answer has nothing to score")
    return ids[: spec.new_tokens], alts


def replay_chats(model, log: list[LoggedChat], k_max: int = 20):
    """(the forced probe set of the log's exchanges, the suspect to match against it)."""
    from hspi_onnx.inputs.chats import tokenizer_for
    from hspi_onnx.inputs.probes import chat_probe_set
    from hspi_onnx.inputs.tokenmap import TokenMap

    spec = model.generation
    if spec is None:
        raise HspiError(f"{model.name} is not a language model; a chat log replays on one")
    tokenizer = tokenizer_for(model)
    tokens = TokenMap(tokenizer)
    forced, queries = [], []
    for n, chat in enumerate(log):
        where = f"exchange {n + 1}"
        ids, alts = _continuation(chat, tokens, tokenizer, spec, where)
        q = GenerationQuery(n, np.asarray(ids, dtype=np.int64))
        if alts is not None:
            q.top_ids, q.logprobs, q.tolerance = _alternatives(alts[: len(ids)], tokens, where, len(ids))
            for p in range(q.top_ids.shape[0]):
                if (q.top_ids[p] < 0).all():
                    q.skipped.add(p)
        elif chat.greedy:
            q.greedy = True
        elif chat.unscorable:
            raise HspiError(
                f"{where}: a sampled answer without log-probabilities is scored by its likelihood at "
                f"temperature 1 without truncation, as the DB records it; this one used {chat.unscorable}"
            )
        else:
            q.likelihood = True
        forced.append(ids)
        queries.append(q)
    name = "replay-chat-" + hashlib.sha256(json.dumps([c.messages for c in log] + forced).encode()).hexdigest()[:12]
    probes = chat_probe_set(model, [c.messages for c in log], name, continuations=forced)
    if any(q.likelihood for q in queries) and not all(q.likelihood for q in queries):
        raise HspiError("the log mixes sampled answers without log-probabilities with others: replay them as two logs")
    normalizer = "server" if any(q.top_ids is not None for q in queries) else "exact"
    return probes, GenerationSuspect("", probes.sha256, model.sha256, queries, normalizer)


def _alternatives(entries: list, tokens, where: str, n: int):
    """The logged top alternatives as (ids, logprobs, tolerance) arrays; a position whose
    alternatives are fewer than the most logged, or name ids several tokens print, is left out."""
    from hspi_onnx.inputs.tokenmap import UnknownToken

    k = max((len(e.get("top_logprobs") or []) for e in entries if isinstance(e, dict)), default=0)
    if k < 1:
        raise BadSuspectError(f"{where}: logprobs without top_logprobs")
    ids = np.full((n, k), -1, dtype=np.int64)
    lps = np.zeros((n, k), dtype=np.float64)
    for p, e in enumerate(entries):
        alts = e.get("top_logprobs") if isinstance(e, dict) else None
        if not isinstance(alts, list) or len(alts) != k:
            continue  # fewer than asked (merged by text): not compared here
        try:
            found = [tokens.lookup(a.get("token"), a.get("bytes")) if isinstance(a, dict) else None for a in alts]
        except UnknownToken as exc:
            raise BadSuspectError(f"{where}, token {p}: {exc}") from None
        values = [a.get("logprob") for a in alts]
        if not all(isinstance(t, int) for t in found) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v <= 0 for v in values
        ):
            continue
        order = sorted(range(k), key=lambda j: -values[j])
        ids[p] = [int(found[j] or 0) for j in order]
        lps[p] = [values[j] for j in order]
    return ids, lps, np.zeros((n, k))
