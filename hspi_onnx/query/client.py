"""Send every probe of a probe set to a live service and append its answers to a suspect file."""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import kserve
from .resume import KEY, AnswerFile
from .transport import MAX_BODY, QueryError, Transport

PROTOCOLS = ("kserve-v2",)


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


@dataclass
class QuerySummary:
    path: str
    total: int  # probes in the probe set
    before: int  # answered before this run
    asked: int  # answered in this run
    requests: int


def query(probes, out: str | Path, opts: QueryOptions,
          on_start: Callable[[int, int], None] = lambda total, done: None,
          on_answer: Callable[[int], None] = lambda n: None) -> QuerySummary:
    """Ask ``opts.url`` for every probe of ``probes`` not yet answered in ``out``; each answer is
    appended and flushed as it arrives, so an error or interruption loses nothing received."""
    if opts.protocol not in PROTOCOLS:
        raise QueryError(f"protocol {opts.protocol!r} is not supported; protocols: {', '.join(PROTOCOLS)}")
    if opts.batch < 1 or opts.concurrency < 1 or opts.retries < 0 or opts.timeout <= 0:
        raise QueryError("--batch and --concurrency must be at least 1, --retries at least 0, --timeout positive")
    base, model = kserve.split_url(opts.url, opts.model)
    with Transport(base, opts.timeout, opts.retries, opts.rate, opts.authorization, opts.max_body,
                   opts.backoff, opts.concurrency) as transport:
        answers = AnswerFile(out, probes.sha256, transport.shown, model)
        try:
            done = answers.open()
            ids = [int(i) for i in probes.ids]
            todo = [k for k, pid in enumerate(ids) if pid not in done]
            on_start(len(ids), len(ids) - len(todo))
            batches = [todo[s:s + opts.batch] for s in range(0, len(todo), opts.batch)]
            if batches:
                meta = kserve.metadata(transport, model)
                names = kserve.input_names(list(probes.inputs), meta)
                expected = None if opts.outputs else kserve.output_names(meta)

                def ask(rows: list[int]) -> dict:
                    pids = [ids[k] for k in rows]
                    sel = np.asarray(rows)
                    body = kserve.request_body({n: x[sel] for n, x in probes.inputs.items()}, names,
                                               str(pids[0]), opts.binary, opts.outputs)
                    reply = transport.request("POST", kserve.infer_path(model), body)
                    where = f"POST {transport.shown}{kserve.infer_path(model)} (probes {pids[0]}..{pids[-1]})"
                    doc = kserve.parse_answer(reply, where, pids, expected)
                    doc["parameters"] = {"probe_set": probes.sha256, "probe_ids": pids, KEY: {
                        "protocol": opts.protocol, "status": reply.status, "latency_s": round(reply.latency_s, 6),
                        "attempts": reply.attempts, "binary": opts.binary, "headers": reply.headers}}
                    return doc

                _run(batches, ask, answers, opts.concurrency, on_answer)
        finally:
            answers.close()
    return QuerySummary(str(out), len(ids), len(ids) - len(todo), len(todo), len(batches))


def _run(batches: list[list[int]], ask, answers: AnswerFile, concurrency: int, on_answer) -> None:
    """At most ``concurrency`` requests in flight; answers written as they complete; after the
    first error nothing new is sent, the requests in flight are still written, then it is raised."""
    error: Exception | None = None
    pending = iter(batches)
    with cf.ThreadPoolExecutor(concurrency, thread_name_prefix="hspi-query") as pool:
        flying = {pool.submit(ask, b): b for b in _take(pending, concurrency)}
        try:
            while flying:
                finished, _ = cf.wait(flying, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    rows = flying.pop(fut)
                    try:
                        doc = fut.result()
                        answers.append(doc, f"answer for probes {doc['parameters']['probe_ids'][:4]}")
                        on_answer(len(rows))
                    except QueryError as exc:
                        error = error or exc
                if error is None:
                    flying.update({pool.submit(ask, b): b for b in _take(pending, len(finished))})
        except BaseException:
            for fut in flying:
                fut.cancel()
            raise
    if error is not None:
        raise error


def _take(it, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
