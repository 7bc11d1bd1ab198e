"""Chat prompts for language models: the built-in, versioned set and user files in OpenAI's
messages JSONL (one request per line: ``{"messages": [{"role": ..., "content": ...}, ...]}``
or a bare list of messages).

A chat probe is one conversation; the model's chat template turns it into prompt token ids
(:func:`hspi_onnx.inputs.probes.generate` with kind ``chat``). The built-in set covers varied
content and lengths: a short greeting, a system prompt, code, arithmetic, French and Spanish,
a multi-turn exchange, and one long data prompt (a sensor log near 1,000 tokens) so that the KV
cache matters. Its version is part of every probe set's name; changing a prompt means a new
version, never an edit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hspi_onnx.errors import BadProbesError

PROMPTS_VERSION = 1
ROLES = ("system", "user", "assistant")
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_CHATS = 10_000
MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 64 * 1024

Chat = list[dict[str, str]]


def _sensor_log(n: int = 36) -> str:
    """A deterministic table of readings (no randomness that a library version could change)."""
    rows = []
    for i in range(n):
        temp = 18.0 + ((i * 37) % 23) * 0.35
        hum = 40 + (i * 13) % 31
        rows.append(f"{i + 1:02d}. station {'ABCDE'[i % 5]}, 08:{i % 60:02d}, {temp:.2f} C, humidity {hum}%")
    return "\n".join(rows)


def builtin_chats(version: int = PROMPTS_VERSION) -> list[Chat]:
    """The built-in prompt set of ``version`` (only version 1 exists)."""
    if version != 1:
        raise BadProbesError(f"there is no built-in prompt set version {version}; this version has 1")
    return [
        [{"role": "user", "content": "Hi! How are you today?"}],
        [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "What is the capital of Australia?"},
        ],
        [{"role": "user", "content": "Write a Python function that checks whether a string is a palindrome."}],
        [{"role": "user", "content": "What is 17 * 23 + 119? Show your steps."}],
        [{"role": "user", "content": "Explique en deux phrases pourquoi le ciel est bleu."}],
        [{"role": "user", "content": "¿Cuáles son los tres colores primarios? Responde brevemente."}],
        [
            {"role": "user", "content": "Give me a name for a grey cat."},
            {"role": "assistant", "content": "How about Ash?"},
            {"role": "user", "content": "Another one, please, that starts with M."},
        ],
        [
            {
                "role": "user",
                "content": "Here is a log of temperature readings:\n"
                + _sensor_log()
                + "\nWhich station recorded the highest temperature, and at what time?",
            }
        ],
    ]


def check_chat(chat, where: str) -> Chat:
    """A conversation as a list of {role, content} strings, or a one-line error naming ``where``."""
    if isinstance(chat, dict):
        chat = chat.get("messages")
    if not isinstance(chat, list) or not chat:
        raise BadProbesError(f"{where}: expected a non-empty list of messages or an object with 'messages'")
    if len(chat) > MAX_MESSAGES:
        raise BadProbesError(f"{where}: {len(chat)} messages; at most {MAX_MESSAGES} per chat")
    out = []
    for k, msg in enumerate(chat):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            raise BadProbesError(f"{where}, message {k + 1}: needs a role ({', '.join(ROLES)}) and a string content")
        if len(msg["content"]) > MAX_CONTENT_CHARS:
            raise BadProbesError(f"{where}, message {k + 1}: content over {MAX_CONTENT_CHARS} characters")
        out.append({"role": msg["role"], "content": msg["content"]})
    if out[-1]["role"] == "assistant":
        raise BadProbesError(f"{where}: the last message is the assistant's; a prompt ends with the user's turn")
    return out


def _read_text(path: Path, what: str) -> str:
    """A user's UTF-8 file, at most MAX_FILE_BYTES, or one BadProbesError line."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadProbesError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        raise BadProbesError(f"{what} {str(path)!r} is over {MAX_FILE_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadProbesError(f"{what} {str(path)!r} is not UTF-8 (byte {exc.start})")


def read_chats(path: str | Path) -> list[Chat]:
    """Conversations from an OpenAI messages JSONL file (untrusted: bounded, checked line by line)."""
    path = Path(path)
    text = _read_text(path, "prompt file")
    chats = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadProbesError(f"{path.name}, line {n}: not JSON ({exc.msg})")
        chats.append(check_chat(value, f"{path.name}, line {n}"))
        if len(chats) > MAX_CHATS:
            raise BadProbesError(f"prompt file {str(path)!r} has more than {MAX_CHATS} chats")
    if not chats:
        raise BadProbesError(f"prompt file {str(path)!r} holds no chat")
    return chats


def tokenizer_for(model):
    """The Hugging Face tokenizer (with its chat template) of a generating zoo model."""
    spec = model.generation
    if spec is None:
        raise BadProbesError(f"{model.name} is not a language model with a chat template")
    source = model.conversions()
    if source is None:
        raise BadProbesError(
            f"no tokenizer for {model.name}: the zoo's conversions of {spec.source!r} stand only for the zoo's own export"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source.hf_folder()))


def chat_ids(tokenizer, chat: Chat, spec, what: str) -> list[int]:
    """One chat through the chat template with the generation prompt: its token ids, checked to
    leave room for the generation in the context."""
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    if len(ids) + spec.new_tokens > spec.context:
        raise BadProbesError(
            f"{what} is {len(ids)} tokens; with {spec.new_tokens} to generate it exceeds the context of {spec.context}"
        )
    return [int(i) for i in ids]


def encode_chats(model, chats: list[Chat]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), right-padded with the model's pad id: each chat through the
    model's chat template, with the generation prompt (the assistant's turn) appended."""
    spec = model.generation
    tokenizer = tokenizer_for(model)
    rows = [chat_ids(tokenizer, chat, spec, f"chat {k + 1}") for k, chat in enumerate(chats)]
    width = max(len(r) for r in rows)
    input_ids = np.full((len(rows), width), spec.pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        input_ids[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return input_ids, mask


def read_continuations(path: str | Path, model) -> list[list[int]]:
    """Continuations to score teacher-forced, one JSON line per chat: ``{"tokens": [ids]}`` or
    ``{"text": "..."}`` (tokenized with the model's tokenizer, no special tokens added); checked
    as hostile input like a chat file."""
    path = Path(path)
    lines = [ln for ln in _read_text(path, "continuation file").splitlines() if ln.strip()]
    tokenizer = None
    out = []
    for n, line in enumerate(lines, 1):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadProbesError(f"{path.name}, line {n}: not JSON ({exc.msg})")
        tokens = doc.get("tokens") if isinstance(doc, dict) else None
        text = doc.get("text") if isinstance(doc, dict) else None
        if isinstance(text, str) and tokens is None and 0 < len(text) <= MAX_CONTENT_CHARS:
            tokenizer = tokenizer or tokenizer_for(model)
            tokens = list(tokenizer.encode(text, add_special_tokens=False))
        if (
            not isinstance(tokens, list)
            or not 0 < len(tokens) <= 4096
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens)
        ):
            raise BadProbesError(f'{path.name}, line {n}: needs a non-empty "text" or "tokens" (1 to 4096 ids)')
        out.append(tokens)
    if not out:
        raise BadProbesError(f"continuation file {str(path)!r} holds no continuation")
    return out


def make_chat_probes(
    model, chats_file=None, n: int | None = None, sample_seed: int | None = None, continuations_file=None
):
    """``hspi probes make`` for a language model: the built-in chats (or a user's file), the first
    ``n`` of them, greedy, sampled with a seed, or scored against continuations."""
    from hspi_onnx.inputs.probes import chat_probe_set

    if chats_file is not None:
        chats = read_chats(chats_file)
        base = f"chats-{Path(chats_file).stem}"
    else:
        chats = builtin_chats()
        base = f"chat-v{PROMPTS_VERSION}"
    chats = chats[:n] if n else chats
    name = f"{base}-n{len(chats)}"
    continuations = None
    if continuations_file is not None:
        continuations = read_continuations(continuations_file, model)
        name += "-forced"
    if sample_seed is not None:
        name += f"-sampled-s{sample_seed}"
    return chat_probe_set(model, chats, name, sample_seed=sample_seed, continuations=continuations)
