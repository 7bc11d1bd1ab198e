"""``hspi audit``: query a language-model endpoint, match its answers, check a claim, write the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import DbOpt, JsonOpt, QuietOpt, console, emit_json, progress
from .match import ClaimOpt
from .query import (
    AuthEnvOpt,
    ConcurrencyOpt,
    LmOpt,
    ParamOpt,
    QueryProbesOpt,
    RetriesOpt,
    ServedModelOpt,
    StreamOpt,
    TimeoutOpt,
    TopLogprobsOpt,
    UrlArg,
    authorization,
)

ReportOpt = Annotated[
    Path,
    typer.Option("--output", "-o", metavar="FILE", help="The HTML report to write (self-contained, opens offline)."),
]
AnswersOpt = Annotated[
    Path | None,
    typer.Option(
        "--answers",
        metavar="FILE",
        help="Where the endpoint's answers go (hspi-generation/1; default: beside the report). An existing file of the same query is resumed.",
        show_default=False,
    ),
]


def audit(
    url: UrlArg,
    db: DbOpt,
    probes: QueryProbesOpt,
    claim: ClaimOpt,
    report: ReportOpt = Path("audit.html"),
    answers: AnswersOpt = None,
    lm: LmOpt = None,
    model: ServedModelOpt = None,
    param: ParamOpt = None,
    stream: StreamOpt = False,
    top_logprobs: TopLogprobsOpt = 5,
    concurrency: ConcurrencyOpt = 1,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 30.0,
    auth_env: AuthEnvOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit an OpenAI-compatible language-model endpoint against a claim in one command: ask it the
    chats of a probe set the DB was built on (greedy, top log-probabilities), match the answers
    against the DB's stacks, check CLAIM, and write a self-contained HTML report (verdict and its
    strength, evidence per request, per-token deviation from the claimed and the best-matching
    stack, request log, versions). Exit 0 CONSISTENT, 1 INCONSISTENT, 3 INCONCLUSIVE."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError
    from hspi_onnx.inputs.probes import load_probes
    from hspi_onnx.match.audit import exit_code
    from hspi_onnx.match.claims import parse_claim
    from hspi_onnx.query import QueryOptions
    from hspi_onnx.query.audit import audit_endpoint
    from hspi_onnx.query.chat import plan_for

    from .estimates import estimate_suspect

    wanted = parse_claim(claim)
    ref = ReferenceDB(db)
    if lm is None:
        names = {m.zoo for m in ref.manifest().models.values() if m.zoo}
        if len(names) != 1:
            raise HspiError("name the language model the endpoint serves with --lm (e.g. smollm2)")
        lm = names.pop()
    probe_set = load_probes(probes)
    opts = QueryOptions(
        url,
        model,
        "openai",
        concurrency=concurrency,
        retries=retries,
        timeout=timeout,
        authorization=authorization(auth_env),
        top_logprobs=top_logprobs,
    )
    opts.chat = plan_for(probe_set, "openai", lm, None, param)
    if opts.chat is None:
        raise HspiError(f"{probes} is not a chat probe set of a language model (hspi probes make {lm})")
    opts.endpoint, opts.stream = "chat", stream
    answers = answers or report.with_suffix(".answers.jsonl")
    with progress(quiet or as_json) as bar:
        task = bar.add_task("query", total=len(probe_set))
        doc = audit_endpoint(
            ref,
            probe_set,
            opts,
            wanted,
            report,
            answers,
            ["hspi", *sys.argv[1:]],
            on_start=lambda total, done: bar.update(task, total=total, completed=done),
            on_answer=lambda n: bar.advance(task, n),
            estimate=lambda report, suspect: estimate_suspect(db, report, suspect, probe_set, quiet or as_json),
        )
    if as_json:
        emit_json(doc)
    else:
        print_audit(doc)
    raise typer.Exit(exit_code(doc["verdict"]))


def print_audit(doc: dict) -> None:
    out = console()
    s = doc["strength"]
    out.print(f"claim {','.join(f'{k}={v}' for k, v in doc['claim'].items())}: {doc['verdict']}", highlight=False)
    out.print(f"  {doc['reason']}", highlight=False)
    out.print(f"  {s['summary']}", highlight=False)
    fits = "consistent with every answer" if doc["best_match_fits"] else "nearest, not consistent"
    out.print(f"  best match ({fits}): {doc['best_match']}", highlight=False, soft_wrap=True)
    if doc.get("nearest_claimed"):
        out.print(f"  nearest claimed platform: {doc['nearest_claimed']}", highlight=False, soft_wrap=True)
    if "estimates" in doc["match"]:
        from .match import print_estimates

        print_estimates(doc["match"]["estimates"], indent="  ")
    out.print(f"report: {Path(doc['report']).resolve().as_uri()}", highlight=False, soft_wrap=True)
