"""Send every probe of a probe set to a live service and append its answers to a suspect file:
KServe v2 (:mod:`.kserve`) or an OpenAI-compatible language-model API (:mod:`.openai`)."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import chat, kserve, openai
from .chat import ChatPlan
from .resume import KEY, AnswerFile
from .transport import MAX_BODY, QueryError, Transport

PROTOCOLS = ("kserve-v2", "openai")


@dataclass
class QueryOptions:
    url: str
    model: str | None = None
    protocol: str = "kserve-v2"
    batch: int = 1
    concurrency: int = 1
    rate: float | None = None  # requests per second
    retries: int = 3
    timeout: float = 30.0
    authorization: str | None = None  # the Authorization header's value; never stored
    binary: bool = False
    outputs: list[str] | None = None
    max_body: int = MAX_BODY
    backoff: float = 0.5
    endpoint: str = "completions"  # openai: completions or chat
    top_logprobs: int = 5  # openai
    max_tokens: int = 1  # openai: tokens generated per probe (the first is the probe's own answer)
    token_ids: bool = True  # openai: ask for tokens as ids (return_tokens_as_token_ids)
    chat: ChatPlan | None = None  # openai: a language model's chat probes (query/chat.py)
    stream: bool = False  # openai chat: ask for server-sent events


@dataclass
class QuerySummary:
    path: str
    total: int  # probes in the probe set
    before: int  # answered before this run
    asked: int  # answered in this run
    requests: int


def query(
    probes,
    out: str | Path,
    opts: QueryOptions,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_answer: Callable[[int], None] = lambda n: None,
) -> QuerySummary:
    """Ask ``opts.url`` for every probe of ``probes`` not yet answered in ``out``; each answer is
    appended and flushed as it arrives, so an error or interruption loses nothing received."""
    if opts.protocol not in PROTOCOLS:
        raise QueryError(f"protocol {opts.protocol!r} is not supported; protocols: {', '.join(PROTOCOLS)}")
    if opts.batch < 1 or opts.concurrency < 1 or opts.retries < 0 or opts.timeout <= 0:
        raise QueryError("--batch and --concurrency must be at least 1, --retries at least 0, --timeout positive")
    if opts.protocol == "openai" and (
        opts.endpoint not in openai.ENDPOINTS or opts.top_logprobs < 1 or opts.max_tokens < 1
    ):
        raise QueryError(
            f"--endpoint must be one of {', '.join(openai.ENDPOINTS)}, --top-logprobs and --max-tokens at least 1"
        )
    if opts.protocol == "openai" and opts.endpoint == "chat" and opts.batch != 1:
        raise QueryError("a chat request holds one prompt: use --batch 1 with --endpoint chat")
    if opts.chat is not None and (opts.protocol != "openai" or opts.endpoint != "chat"):
        raise QueryError("a language model's chat probes go to an OpenAI-compatible chat endpoint (--wire openai)")
    model: str | None
    if opts.protocol == "kserve-v2":
        base, model = kserve.split_url(opts.url, opts.model)
    else:
        base, model = openai.split_url(opts.url), opts.model
    ids = [int(i) for i in probes.ids]
    with Transport(
        base, opts.timeout, opts.retries, opts.rate, opts.authorization, opts.max_body, opts.backoff, opts.concurrency
    ) as transport:
        if opts.protocol == "openai":
            model = openai.served_model(transport, model)
            if opts.chat is None:
                openai.prompt_ids(probes, 0)  # a probe set of prompts, or a clear error before anything is sent
        assert model is not None  # kserve's from the URL or --model, openai's from the server
        sign = None if opts.protocol != "openai" else (chat.signature if opts.chat else openai.signature)
        answers = AnswerFile(out, probes.sha256, transport.shown, model, sign)
        try:
            done = answers.open()
            todo = [k for k, pid in enumerate(ids) if pid not in done]
            on_start(len(ids), len(ids) - len(todo))
            batches = [todo[s : s + opts.batch] for s in range(0, len(todo), opts.batch)]
            if batches:
                asker = _kserve_asker if opts.protocol != "openai" else (_chat_asker if opts.chat else _openai_asker)
                ask = asker(transport, model, probes, ids, opts)
                _run(batches, ask, answers, opts.concurrency, on_answer)
        finally:
            answers.close()
    return QuerySummary(str(out), len(ids), len(ids) - len(todo), len(todo), len(batches))


@dataclass
class AdaptiveResult:
    summary: QuerySummary
    asked: list[int]  # probe ids, in the order asked (answers resumed from the file first)
    answers: list[int]  # the label each gave
    consistent: list[str]  # DB platforms whose labels equal every answer


def query_adaptive(
    probes,
    out: str | Path,
    opts: QueryOptions,
    platforms: list[str],
    table: np.ndarray,
    max_queries: int,
    on_answer: Callable[[int, int], None] = lambda asked, alive: None,
) -> AdaptiveResult:
    """Ask a label-only KServe v2 service one probe at a time, each time the probe whose DB labels
    (``table``: probes of ``probes`` x ``platforms``) best split the platforms still consistent
    with the answers (:mod:`hspi_onnx.border.tree`); stop when no probe splits them or after
    ``max_queries``. Answers are appended to ``out`` as by :func:`query` (and read back from it
    when it already holds some)."""
    from hspi_onnx.border.tree import next_probe

    if opts.protocol != "kserve-v2":
        raise QueryError("adaptive questions are asked over KServe v2 (a label per request)")
    base, model = kserve.split_url(opts.url, opts.model)
    ids = [int(i) for i in probes.ids]
    row_of = {pid: k for k, pid in enumerate(ids)}
    alive = np.ones(len(platforms), dtype=bool)
    asked: list[int] = []
    labels: list[int] = []
    requests = 0
    with Transport(
        base, opts.timeout, opts.retries, opts.rate, opts.authorization, opts.max_body, opts.backoff, 1
    ) as transport:
        answers = AnswerFile(out, probes.sha256, transport.shown, model)
        try:
            answers.open()
            for pid in answers.docs:  # the answers already in the file, in its order
                if pid not in row_of:
                    raise QueryError(f"{out} answers probe {pid}, which is not in {probes.name}")
                doc, r = answers.docs[pid]
                asked.append(pid)
                labels.append(kserve.label_of(doc, r))
                alive &= table[row_of[pid]] == labels[-1]
            before = len(asked)
            ask = _kserve_asker(transport, model, probes, ids, opts)
            while len(asked) < max_queries:
                k = next_probe(table, alive, {row_of[p] for p in asked})
                if k is None:
                    break
                doc = ask([k])[0]
                requests += 1
                answers.append(doc, f"answer for probe {ids[k]}")
                asked.append(ids[k])
                labels.append(kserve.label_of(doc))
                alive &= table[k] == labels[-1]
                on_answer(len(asked), int(alive.sum()))
        finally:
            answers.close()
    summary = QuerySummary(str(out), len(ids), before, len(asked) - before, requests)
    return AdaptiveResult(summary, asked, labels, [p for p, a in zip(platforms, alive) if a])


def _ours(probes, pids: list[int], reply, opts: QueryOptions) -> dict:
    """The parameters an answer line carries: the probe set and ids, and what the request met."""
    return {
        "probe_set": probes.sha256,
        "probe_ids": pids,
        KEY: {
            "protocol": opts.protocol,
            "status": reply.status,
            "latency_s": round(reply.latency_s, 6),
            "attempts": reply.attempts,
            "headers": reply.headers,
            **({"binary": opts.binary} if opts.protocol == "kserve-v2" else {"endpoint": opts.endpoint}),
        },
    }


def _kserve_asker(transport: Transport, model: str, probes, ids: list[int], opts: QueryOptions):
    meta = kserve.metadata(transport, model)
    names = kserve.input_names(list(probes.inputs), meta)
    expected = None if opts.outputs else kserve.output_names(meta)
    path = kserve.infer_path(model)

    def ask(rows: list[int]) -> list[dict]:
        pids = [ids[k] for k in rows]
        sel = np.asarray(rows)
        body = kserve.request_body(
            {n: x[sel] for n, x in probes.inputs.items()}, names, str(pids[0]), opts.binary, opts.outputs
        )
        reply = transport.request("POST", path, body)
        doc = kserve.parse_answer(reply, f"POST {transport.shown}{path} (probes {pids[0]}..{pids[-1]})", pids, expected)
        doc["parameters"] = _ours(probes, pids, reply, opts)
        return [doc]

    return ask


def _openai_asker(transport: Transport, model: str, probes, ids: list[int], opts: QueryOptions):
    path = openai.ENDPOINTS[opts.endpoint]

    def ask(rows: list[int]) -> list[dict]:
        pids = [ids[k] for k in rows]
        body = openai.request_body(
            opts.endpoint,
            model,
            [openai.prompt_ids(probes, k) for k in rows],
            opts.top_logprobs,
            opts.max_tokens,
            opts.token_ids,
        )
        reply = transport.request("POST", path, body)
        lines = openai.parse_answer(
            reply,
            f"POST {transport.shown}{path} (probes {pids[0]}..{pids[-1]})",
            opts.endpoint,
            pids,
            opts.top_logprobs,
            opts.max_tokens,
        )
        for pid, line in zip(pids, lines):
            line["parameters"] = _ours(probes, [pid], reply, opts)
        return lines

    return ask


def _chat_asker(transport: Transport, model: str, probes, ids: list[int], opts: QueryOptions):
    plan = opts.chat
    assert plan is not None
    path = openai.ENDPOINTS["chat"]

    def ask(rows: list[int]) -> list[dict]:
        (row,) = rows
        reply = transport.request("POST", path, chat.chat_body(plan, model, row, opts.top_logprobs, opts.stream))
        where = f"POST {transport.shown}{path} (chat {ids[row]})"
        doc = chat.stream_doc(reply, where) if opts.stream else openai.response_doc(reply, where)
        line = chat.parse_chat_answer(doc, where, plan, row, ids[row], probes.sha256, opts.top_logprobs)
        line["parameters"] = _ours(probes, [ids[row]], reply, opts) | {"request": plan.params, "stream": opts.stream}
        return [line]

    return ask


def _run(batches: list[list[int]], ask, answers: AnswerFile, concurrency: int, on_answer) -> None:
    """At most ``concurrency`` requests in flight; answers written as they complete; after the
    first error nothing new is sent, the requests in flight are still written, then it is raised."""
    error: Exception | None = None
    pending = iter(batches)
    with cf.ThreadPoolExecutor(concurrency, thread_name_prefix="hspi-query") as pool:
        flying = {pool.submit(ask, b): b for b in itertools.islice(pending, concurrency)}
        try:
            while flying:
                finished, _ = cf.wait(flying, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    rows = flying.pop(fut)
                    try:
                        for doc in fut.result():
                            answers.append(doc, f"answer for probes {doc['parameters']['probe_ids'][:4]}")
                        on_answer(len(rows))
                    except QueryError as exc:
                        error = error or exc
                if error is None:
                    flying.update({pool.submit(ask, b): b for b in itertools.islice(pending, len(finished))})
        except BaseException:
            for fut in flying:
                fut.cancel()
            raise
    if error is not None:
        raise error
