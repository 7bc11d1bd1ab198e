"""A language model's chat probes sent to an OpenAI-compatible chat server (llama.cpp's
``llama_cpp.server``, vLLM, transformers serve, ``hspi serve``): each chat's messages as
``/v1/chat/completions`` with ``logprobs``/``top_logprobs``, greedy (``temperature`` 0, a fixed
``seed``), ``max_tokens`` the DB's generation length; each answer becomes an
``hspi-generation/1`` line (:mod:`hspi_onnx.match.generation`) that ``hspi match`` and
``hspi verify`` read, with ``"normalizer": "server"`` (the server computed the log-probabilities).

The messages are the chats the probe set was made from: the built-in set its name names
(``chat-v1-nN``) or the user's file, re-encoded with the language model's tokenizer and chat
template and checked against the probe set's ids, so what the server is asked is what the DB's
platforms ran. A server that tokenizes the conversation otherwise (another template, a BOS token
more) is caught by its ``usage.prompt_tokens``.

Servers print tokens as text. :class:`TokenMap` maps a printed token back to ids with the model's
tokenizer: by the token's UTF-8 ``bytes`` where the server gives them (exact), else by its text,
decoded from the token's bytes as servers decode a lone token (invalid UTF-8 dropped, as
llama.cpp does, or replaced by U+FFFD, as Hugging Face's decode does). Where several ids print
the same, the line keeps every candidate (a list) and says how many, instead of guessing; where
too many do (a lone byte of a multi-byte character printed as ""), the position matches any id.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hspi_onnx.inputs.tokenmap import TokenMap, UnknownToken

from .openai import response_doc
from .transport import QueryError, Reply

MAX_MESSAGES_BYTES = 1 << 20
SEED = 0


@dataclass
class ChatPlan:
    """What a chat query sends and how it reads the answers."""

    lm_name: str  # the DB model the answers are matched against
    messages: list[list[dict]]  # per probe row
    prompt_lengths: list[int]
    tokens: TokenMap
    new_tokens: int
    params: dict = field(default_factory=dict)  # extra request fields (--param)


def chat_plan(probes, lm, chats_file: str | Path | None = None, params: dict | None = None) -> ChatPlan:
    """The chats behind ``probes`` (a chat probe set of ``lm``), checked against its token ids."""
    from hspi_onnx.inputs.chats import builtin_chats, encode_chats, read_chats, tokenizer_for

    spec = lm.generation
    if spec is None:
        raise QueryError(f"{lm.name} is not a language model; chat queries need one (--lm)")
    if "input_ids" not in probes.inputs or "attention_mask" not in probes.inputs:
        raise QueryError(f"probe set {probes.name!r} is not a chat probe set (hspi probes make MODEL)")
    if any(name in probes.inputs for name in ("sample_seed", "forced_ids")):
        raise QueryError(f"probe set {probes.name!r} is sampled or teacher-forced; a chat query asks greedy answers")
    chats = read_chats(chats_file) if chats_file is not None else builtin_chats()
    n = len(probes.ids)
    rows = [int(i) for i in probes.ids]
    if max(rows) >= len(chats):
        raise QueryError(
            f"probe set {probes.name!r} has chat {max(rows)}; the chats given have {len(chats)} (use --chats FILE)"
        )
    picked = [chats[i] for i in rows]
    ids, mask = encode_chats(lm, picked)
    want_ids, want_mask = probes.inputs["input_ids"], probes.inputs["attention_mask"]
    for r in range(n):
        a, b = ids[r, : int(mask[r].sum())], want_ids[r, : int(want_mask[r].sum())]
        if not np.array_equal(a, b):
            raise QueryError(
                f"chat {rows[r]} encodes to other token ids than probe set {probes.name!r} holds "
                "(another chat file or tokenizer; name the chats with --chats FILE)"
            )
    return ChatPlan(
        lm.name,
        [list(c) for c in picked],
        [int(want_mask[r].sum()) for r in range(n)],
        TokenMap(tokenizer_for(lm)),
        spec.new_tokens,
        dict(params or {}),
    )


def plan_for(probes, wire: str, lm_ref: str | None, chats_file, params: list[str] | None) -> ChatPlan | None:
    """The chat plan of a query: None unless ``probes`` is a language model's chat probe set."""
    from hspi_onnx.inputs.probes import CHAT_KIND

    if probes.kind != CHAT_KIND:
        if lm_ref or chats_file or params:
            raise QueryError("--lm, --chats and --param are for a language model's chat probe sets")
        return None
    if wire != "openai":
        raise QueryError(f"probe set {probes.name!r} holds chats: send them with --wire openai")
    if not lm_ref:
        raise QueryError("a chat probe set needs --lm MODEL: the language model whose tokenizer made it")
    from hspi_onnx.inputs.model import resolve_model

    return chat_plan(probes, resolve_model(lm_ref), chats_file, parse_params(params))


def parse_params(items: list[str] | None) -> dict:
    """``--param KEY=VALUE`` (VALUE read as JSON when it parses, else as a string)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"--param {item!r}: write KEY=VALUE (e.g. repeat_penalty=1.0)")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def chat_body(plan: ChatPlan, model: str, row: int, k: int, stream: bool = False) -> bytes:
    doc = {
        "model": model,
        "messages": plan.messages[row],
        "max_tokens": plan.new_tokens,
        "temperature": 0,
        "seed": SEED,
        "logprobs": True,
        "top_logprobs": k,
        **({"stream": True, "stream_options": {"include_usage": True}} if stream else {}),
        **plan.params,
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGES_BYTES:
        raise QueryError(f"chat {row} is over {MAX_MESSAGES_BYTES} bytes as a request")
    return body


def _logprob(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 0:
        raise QueryError(f"{what}: a log-probability must be a number at most 0, not {str(value)[:20]}")
    if math.isinf(value):
        raise QueryError(f"{what}: a log-probability of -inf among the top alternatives")
    return float(value)


MAX_EVENTS = 100_000


def stream_doc(reply: Reply, where: str) -> dict:
    """A streamed answer (server-sent events of ``chat.completion.chunk``) as the one response
    object a non-streamed request gets: the deltas' text and log-probabilities concatenated, the
    last finish reason, the usage where a chunk carries it. The stream must end with ``[DONE]``
    (one that stops before is truncated)."""
    if reply.status != 200 or reply.content_type not in ("text/event-stream", ""):
        return response_doc(reply, where)  # an error, or a server that ignored "stream"
    text = reply.body.decode("utf-8", "replace")
    doc: dict = {}
    content: list = []
    parts: list[str] = []
    finish = None
    done = False
    for n, line in enumerate(text.splitlines()):
        if n > MAX_EVENTS:
            raise QueryError(f"{where}: the stream has over {MAX_EVENTS} lines")
        if not line.startswith("data:"):
            continue  # comments, keep-alives, event names, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise QueryError(f"{where}: a streamed event is not JSON ({data[:60]!r})") from None
        if not isinstance(chunk, dict):
            raise QueryError(f"{where}: a streamed event is not a JSON object")
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in doc:
                doc[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            doc["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            lp = choice.get("logprobs")
            if isinstance(lp, dict) and isinstance(lp.get("content"), list):
                content.extend(lp["content"])
            finish = choice.get("finish_reason") or finish
    if not done:
        raise QueryError(f"{where}: the stream ended without [DONE] ({len(content)} tokens received; truncated?)")
    message = {"role": "assistant", "content": "".join(parts)}
    logprobs = {"content": content} if content else None  # a server that ignores logprobs sends none
    doc["choices"] = [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}]
    return doc


def parse_chat_answer(doc: dict, where: str, plan: ChatPlan, row: int, probe_id: int, probes_sha: str, k: int):
    """One ``hspi-generation/1`` line (a dict; numbers as the server printed them) of a chat
    answer (the response object, or a stream assembled by :func:`stream_doc`), with what the
    server said about itself."""
    choices = doc.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise QueryError(f"{where}: the response holds no single choice")
    choice = choices[0]
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    raw_usage = doc.get("usage")
    usage: dict = raw_usage if isinstance(raw_usage, dict) else {}
    _check_prompt(usage, plan, row, where)
    meta = {key: doc[key] for key in ("id", "model", "created", "system_fingerprint") if key in doc}
    line = {"format": "hspi-generation/1", "probe_set": probes_sha, "probe_id": probe_id, "model": plan.lm_name}
    about = {
        "text": text,
        "finish_reason": choice.get("finish_reason"),
        "response": meta | ({"usage": usage} if usage else {}),
    }
    if content is None and isinstance(text, str):
        # a server that ignores logprobs (transformers serve does): its text is the evidence
        count = usage.get("completion_tokens")
        if isinstance(count, int) and not 0 < count <= plan.new_tokens:
            raise QueryError(f"{where}: the server counted {count} generated tokens, asked for {plan.new_tokens}")
        extra = {"completion_tokens": count} if isinstance(count, int) else {}
        return line | {"tokens_from": "text", "tokens": []} | extra | about
    if not isinstance(content, list):
        raise QueryError(f"{where}: the choice holds neither logprobs.content nor a message's text")
    if not 1 <= len(content) <= plan.new_tokens:
        raise QueryError(f"{where}: {len(content)} tokens with log-probabilities, asked for at most {plan.new_tokens}")
    tokens: list = []
    top: list[list] = []
    ambiguous = collapsed = 0
    for p, entry in enumerate(content):
        what = f"{where}, token {p}"
        alts = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if isinstance(alts, list) and len(alts) == k + 1 and all(isinstance(a, dict) for a in alts):
            alts = _without_sampled_extra(alts, entry)
        if not isinstance(alts, list) or not 1 <= len(alts) <= k or not all(isinstance(a, dict) for a in alts):
            raise QueryError(
                f"{what}: {len(alts) if isinstance(alts, list) else 'no'} top log-probabilities, asked {k}"
            )
        token = _lookup(plan, entry, what)
        if len(alts) < k:
            # fewer than asked: a server keying them by text (llama-cpp-python) merged two ids that
            # print the same, keeping one's rank and the other's value; not evidence at this position
            collapsed += 1
            tokens.append(token)
            top.append([])
            continue
        ids = [_lookup(plan, a, what) for a in alts]
        values = [_logprob(a.get("logprob"), what) for a in alts]
        order = sorted(range(k), key=lambda j: -values[j])  # stable: the server's order among ties
        pairs = [[ids[j], values[j]] for j in order]
        ambiguous += sum(not isinstance(t, int) for t in [token, *ids])
        tokens.append(token)
        top.append(pairs)
    if collapsed == len(content):
        raise QueryError(f"{where}: fewer top log-probabilities than the {k} asked at every position")
    evidence = {"normalizer": "server", "tokens": tokens, "top_logprobs": top, "ambiguous_tokens": ambiguous}
    return line | evidence | ({"collapsed_positions": collapsed} if collapsed else {}) | about


def _without_sampled_extra(alts: list[dict], entry: dict) -> list[dict]:
    """llama-cpp-python adds the sampled token to ``top_logprobs`` when it is not among the top k
    (k + 1 entries): that entry, the lowest, is dropped; any other k + 1 list stays as it is (and
    is refused by the caller)."""
    values = [a.get("logprob") for a in alts]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return alts
    last = min(range(len(alts)), key=lambda i: (values[i], -i))
    if alts[last].get("token") == entry.get("token") and values.count(values[last]) == 1:
        return alts[:last] + alts[last + 1 :]
    return alts


def _lookup(plan: ChatPlan, entry: dict, what: str):
    try:
        return plan.tokens.lookup(entry.get("token"), entry.get("bytes"))
    except UnknownToken as exc:
        raise QueryError(f"{what}: {exc}") from None


def _check_prompt(usage: dict, plan: ChatPlan, row: int, where: str) -> None:
    prompt_tokens = usage.get("prompt_tokens")
    if isinstance(prompt_tokens, int) and prompt_tokens != plan.prompt_lengths[row]:
        raise QueryError(
            f"{where}: the server counted {prompt_tokens} prompt tokens, the DB's chat has "
            f"{plan.prompt_lengths[row]} (another chat template or tokenizer?)"
        )


def signature(doc: dict) -> tuple:
    """What every answer of one chat query shares: the format, the evidence (log-probabilities
    normalized by the server, or text) and the alternatives per token."""
    top = doc.get("top_logprobs") or []
    return (doc["format"], doc.get("normalizer", doc.get("tokens_from")), max((len(a) for a in top), default=0))
