"""``hspi query``: send a probe set to a live inference endpoint and record a suspect file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import QuietOpt, console, progress

UrlArg = Annotated[
    str,
    typer.Argument(
        metavar="URL", help="The server's base URL (http://HOST:PORT), or URL/v2/models/NAME.", show_default=False
    ),
]
QueryProbesOpt = Annotated[
    Path, typer.Option("--probes", metavar="FILE", help="Probe-set .npz (hspi probes make).", show_default=False)
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Suspect file to write (JSON Lines); an existing one of the same query is resumed.",
        show_default=False,
    ),
]
WireOpt = Annotated[
    str,
    typer.Option(
        "--wire",
        metavar="NAME",
        help="Wire protocol: kserve-v2 (Open Inference Protocol, REST) or openai (OpenAI-compatible completions of a language model; the probes' token ids are the prompts).",
    ),
]
ServedModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="The model's name on the server (default: from URL/v2/models/NAME; openai: the server's only model).",
        show_default=False,
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch", metavar="B", min=1, help="Probes per request.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", metavar="C", min=1, help="Requests in flight at once.")]
RateOpt = Annotated[
    float | None,
    typer.Option(
        "--rate",
        metavar="R",
        min=0.001,
        help="At most R requests started per second (default: no limit).",
        show_default=False,
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries",
        metavar="N",
        min=0,
        help="Retries of a request on 429, 5xx, timeouts and connection errors (exponential backoff, Retry-After honoured).",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", metavar="S", min=0.001, help="Seconds a request may take, answer included.")
]
AuthEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-env",
        metavar="VAR",
        help="Environment variable holding the Authorization header's value ('Bearer ...'; a bare token gets 'Bearer '). Never written anywhere.",
        show_default=False,
    ),
]
BinaryOpt = Annotated[
    bool,
    typer.Option(
        "--binary", help="Ask for binary output tensors (binary_data_output); stored as JSON with round-trip floats."
    ),
]
EndpointOpt = Annotated[
    str,
    typer.Option(
        "--endpoint",
        metavar="NAME",
        help="openai: completions (token-id prompts, --batch allowed) or chat (the ids as UTF-8 text, one per request).",
    ),
]
TopLogprobsOpt = Annotated[
    int, typer.Option("--top-logprobs", metavar="K", min=1, max=20, help="openai: log-probabilities asked per token.")
]
MaxTokensOpt = Annotated[
    int,
    typer.Option(
        "--max-tokens",
        metavar="T",
        min=1,
        max=256,
        help="openai: tokens generated per probe (the first is what hspi match compares).",
    ),
]
TokenIdsOpt = Annotated[
    bool,
    typer.Option(
        "--token-ids/--no-token-ids",
        help="openai: ask for tokens as ids (vLLM's return_tokens_as_token_ids); off for servers refusing unknown fields (chat then reads one-byte tokens' bytes).",
    ),
]
LmOpt = Annotated[
    str | None,
    typer.Option(
        "--lm",
        metavar="MODEL",
        help="openai, chat probe sets: the language model (zoo name or ONNX) whose tokenizer and chat template made the probes; its tokenizer maps the server's printed tokens back to ids.",
        show_default=False,
    ),
]
ChatsOpt = Annotated[
    Path | None,
    typer.Option(
        "--chats",
        metavar="FILE",
        help="openai, chat probe sets: the chats (OpenAI messages JSONL) the probe set was made from (default: the built-in chats); checked against the probe set's ids.",
        show_default=False,
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="KEY=VALUE",
        help="openai, chat: an extra request field (VALUE as JSON), e.g. repeat_penalty=1.0 for llama.cpp's servers; repeatable; recorded with each answer.",
        show_default=False,
    ),
]
StreamOpt = Annotated[
    bool,
    typer.Option("--stream", help="openai, chat probe sets: ask for the answers streamed (server-sent events)."),
]
AdaptiveOpt = Annotated[
    Path | None,
    typer.Option(
        "--adaptive",
        metavar="DB",
        help="Ask one probe at a time (KServe v2), each the one whose labels in DB (built on this probe set, e.g. border probes) best split the platforms still consistent with the answers; stops when none splits them.",
        show_default=False,
    ),
]
MaxQueriesOpt = Annotated[
    int, typer.Option("--max-queries", metavar="N", min=1, help="With --adaptive: at most N probes asked.")
]
OutputsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--output-name",
        metavar="NAME",
        help="Ask only for this output; repeatable (default: every output).",
        show_default=False,
    ),
]


def authorization(var: str | None) -> str | None:
    """The Authorization value from the environment variable ``var`` (the value is never shown)."""
    import os

    from hspi_onnx.query import QueryError

    if var is None:
        return None
    value = os.environ.get(var, "").strip()
    if not value:
        raise QueryError(f"--auth-env {var}: the environment variable is not set or empty")
    return value if " " in value else f"Bearer {value}"


def query(
    url: UrlArg,
    probes: QueryProbesOpt,
    output: OutOpt,
    wire: WireOpt = "kserve-v2",
    model: ServedModelOpt = None,
    batch: BatchOpt = 1,
    concurrency: ConcurrencyOpt = 1,
    rate: RateOpt = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 30.0,
    auth_env: AuthEnvOpt = None,
    binary: BinaryOpt = False,
    output_name: OutputsOpt = None,
    endpoint: EndpointOpt = "completions",
    top_logprobs: TopLogprobsOpt = 5,
    max_tokens: MaxTokensOpt = 1,
    token_ids: TokenIdsOpt = True,
    lm: LmOpt = None,
    chats: ChatsOpt = None,
    param: ParamOpt = None,
    stream: StreamOpt = False,
    adaptive_db: AdaptiveOpt = None,
    max_queries: MaxQueriesOpt = 16,
    quiet: QuietOpt = False,
) -> None:
    """Send every probe of a probe set to a live endpoint; write its answers as a suspect file
    (JSON Lines: KServe v2 responses, or per-token top-k log-probabilities for openai) that hspi
    match and hspi verify read. A language model's chat probes (hspi probes make MODEL) go to
    /v1/chat/completions as their messages, greedy, with top log-probabilities; the answers are
    hspi-generation/1 lines. Answers already in the file are not asked again. With --adaptive DB,
    one probe at a time, each chosen to split the DB platforms still consistent with the labels
    answered so far."""
    from hspi_onnx.inputs.probes import load_probes
    from hspi_onnx.query import QueryOptions
    from hspi_onnx.query import query as run_query
    from hspi_onnx.query.chat import plan_for

    opts = QueryOptions(
        url,
        model,
        wire,
        batch,
        concurrency,
        rate,
        retries,
        timeout,
        authorization(auth_env),
        binary,
        output_name or None,
        endpoint=endpoint,
        top_logprobs=top_logprobs,
        max_tokens=max_tokens,
        token_ids=token_ids,
    )
    probe_set = load_probes(probes)
    opts.chat = plan_for(probe_set, wire, lm, chats, param)
    if opts.chat is not None:
        opts.endpoint, opts.stream = "chat", stream
    elif stream:
        from hspi_onnx.query import QueryError

        raise QueryError("--stream is for a language model's chat probe sets")
    if adaptive_db is not None:
        _adaptive(probe_set, output, opts, adaptive_db, max_queries, quiet)
        return
    with progress(quiet) as bar:
        task = bar.add_task("query", total=len(probe_set))
        summary = run_query(
            probe_set,
            output,
            opts,
            on_start=lambda total, done: bar.update(task, total=total, completed=done),
            on_answer=lambda n: bar.advance(task, n),
        )
    console(stderr=True).print(
        f"{summary.path}: {summary.asked} probes answered in {summary.requests} requests"
        + (f", {summary.before} already there" if summary.before else ""),
        highlight=False,
    )


def _adaptive(probe_set, output: Path, opts, db_path: Path, max_queries: int, quiet: bool) -> None:
    from hspi_onnx.border.tree import label_table
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.query.client import query_adaptive

    platforms, table = label_table(ReferenceDB(db_path), probe_set)
    with progress(quiet) as bar:
        task = bar.add_task("adaptive questions", total=max_queries)
        result = query_adaptive(
            probe_set,
            output,
            opts,
            platforms,
            table,
            max_queries,
            on_answer=lambda asked, alive: bar.update(
                task, completed=asked, description=f"{alive} platforms consistent"
            ),
        )
    err = console(stderr=True)
    err.print(
        f"{result.summary.path}: asked {len(result.asked)} probes ({result.summary.before} read back); "
        f"{len(result.consistent)} of {len(platforms)} DB platforms consistent with every label",
        highlight=False,
    )
    for p in result.consistent[:12]:
        err.print(f"  {p}", highlight=False, soft_wrap=True)
