"""OpenAI-compatible ``POST /v1/chat/completions`` for a language model of the zoo (a decoder
with ``hspi.generation``): what ``hspi serve`` answers for SmolLM2 on any LLM platform of the DB.

The messages go through the model's own chat template (the tokenizer its conversions carry) with
the generation prompt, exactly as ``hspi probes make`` encodes a chat, and run through the
platform as one chat probe: the shared decode loop in a worker process, so an answer is
bit-identical to that platform's DB rows for the same chat. Decoding is greedy (``temperature``
0 or absent; another temperature is refused rather than silently ignored), at most the model's
``new_tokens`` (16) tokens. ``logprobs``/``top_logprobs`` (up to 20) are the platform's own
log-probabilities (float64 log-softmax of its logits, rounded once to float32); each token comes
with its text as Hugging Face decodes a lone token and its exact UTF-8 ``bytes``. ``stream``
sends the same answer as server-sent ``chat.completion.chunk`` events, ``[DONE]`` last, with a
usage chunk when ``stream_options.include_usage`` is set. Nothing names the platform.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np

from hspi_onnx.serve.service import BadRequest

MAX_LOGPROBS = 20


class ChatModel:
    """The served language model's tokenizer, chat template and token bytes (made once)."""

    def __init__(self, model) -> None:
        from hspi_onnx.inputs.chats import tokenizer_for
        from hspi_onnx.inputs.tokenmap import TokenMap

        self.spec = model.generation
        self.tokenizer = tokenizer_for(model)
        self.pieces = TokenMap(self.tokenizer).pieces

    def encode(self, messages: list[dict]) -> np.ndarray:
        """The messages through the chat template, as ``hspi probes make`` encodes a chat."""
        from hspi_onnx.errors import BadProbesError
        from hspi_onnx.inputs.chats import chat_ids, check_chat

        try:
            ids = chat_ids(
                self.tokenizer, check_chat(messages, "the request's messages"), self.spec, "the conversation"
            )
        except BadProbesError as exc:
            raise BadRequest(str(exc))
        return np.asarray(ids, dtype=np.int64)

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token(self, i: int, logprob: float) -> dict:
        piece = self.pieces[i]
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}


_MODELS: dict[int, ChatModel] = {}
_LOCK = threading.Lock()


def chat_model(service) -> ChatModel:
    with _LOCK:
        if id(service) not in _MODELS:
            _MODELS[id(service)] = ChatModel(service.model)
        return _MODELS[id(service)]


def _request(doc: dict, served: str, spec) -> dict:
    """The request's settings, checked."""
    if doc.get("model") != served:
        raise BadRequest(f"this server serves model {served!r}")
    if doc.get("n", 1) not in (1, None):
        raise BadRequest("n must be 1")
    temperature = doc.get("temperature", 0)
    if temperature not in (0, 0.0, None):
        raise BadRequest("this server decodes greedily: temperature must be 0")
    if not isinstance(doc.get("logprobs", False), bool) or not isinstance(doc.get("stream", False), bool):
        raise BadRequest("logprobs and stream must be true or false")
    top = doc.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_LOGPROBS):
        raise BadRequest(f"top_logprobs must be an integer from 0 to {MAX_LOGPROBS}")
    if top and not doc.get("logprobs"):
        raise BadRequest("top_logprobs needs logprobs: true")
    limit = doc.get("max_completion_tokens", doc.get("max_tokens", spec.new_tokens))
    if limit is None:
        limit = spec.new_tokens
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= spec.new_tokens:
        raise BadRequest(f"max_tokens must be an integer from 1 to {spec.new_tokens}")
    options = doc.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object")
    return {
        "max_tokens": limit,
        "logprobs": bool(doc.get("logprobs")),
        "top": top or 0,
        "stream": bool(doc.get("stream")),
        "usage_chunk": bool(options.get("include_usage")),
    }


def chat(service, doc: dict):
    """A chat completion (a dict), or its stream (a list of server-sent event strings)."""
    lm = chat_model(service)
    req = _request(doc, service.name, lm.spec)
    if not isinstance(doc.get("messages"), list):
        raise BadRequest("messages must be a list")
    ids = lm.encode(doc["messages"])
    out = service.infer({"input_ids": ids[None], "attention_mask": np.ones((1, len(ids)), np.int64)})
    tokens = [int(t) for t in out["tokens"][0][: req["max_tokens"]] if t >= 0]
    stop = next((p for p, t in enumerate(tokens) if t in lm.spec.stop), None)
    finish = "stop" if stop is not None else "length"
    shown = tokens[:stop] if stop is not None else tokens
    content = None
    if req["logprobs"]:
        ids_k, lps = out["topk_ids"][0], out["topk_logprobs"][0]
        content = []
        for p, t in enumerate(shown):
            row = {int(i): float(v) for i, v in zip(ids_k[p], lps[p])}
            entry = lm.token(t, row.get(t, float(lps[p][-1])))  # greedy: t is the top-1, always in the row
            entry["top_logprobs"] = [lm.token(int(i), float(v)) for i, v in zip(ids_k[p][: req["top"]], lps[p])]
            content.append(entry)
    usage = {"prompt_tokens": len(ids), "completion_tokens": len(tokens), "total_tokens": len(ids) + len(tokens)}
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": service.name}
    if not req["stream"]:
        message = {"role": "assistant", "content": lm.text(shown)}
        logprobs = {"content": content, "refusal": None} if content is not None else None
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
        return head | {"object": "chat.completion", "choices": [choice], "usage": usage}
    return _events(lm, head, shown, content, finish, usage if req["usage_chunk"] else None)


def _events(lm: ChatModel, head: dict, shown: list[int], content, finish: str, usage) -> list[str]:
    """The answer as ``chat.completion.chunk`` events: the role, one token each (its text is what
    the decoded prefix grew by), the finish reason, the usage when asked, ``[DONE]``."""

    def event(choices: list, **extra) -> str:
        return "data: " + json.dumps(head | {"object": "chat.completion.chunk", "choices": choices} | extra) + "\n\n"

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    before = ""
    for p in range(len(shown)):
        text = lm.text(shown[: p + 1])
        delta = {"content": text[len(before) :] if text.startswith(before) else text}
        before = text
        logprobs = {"content": [content[p]], "refusal": None} if content is not None else None
        out.append(event([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]))
    out.append(event([{"index": 0, "delta": {}, "finish_reason": finish}]))
    if usage is not None:
        out.append(event([], usage=usage))
    return out + ["data: [DONE]\n\n"]
