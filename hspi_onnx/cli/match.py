"""``hspi match`` and ``hspi verify``: identify the platform behind a suspect file."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from .common import ClassifierOpt, DbOpt, JsonOpt, PlatformsOpt, QuietOpt, SuspectArg, console, emit_json, progress

ClaimOpt = Annotated[
    str,
    typer.Option(
        "--claim", help='What the provider claims, e.g. "precision=fp16,runtime=onnxruntime".', show_default=False
    ),
]
ReplayOpt = Annotated[
    bool,
    typer.Option(
        "--replay",
        help="Run the DB's platforms of the model (those this machine offers) on the inputs the suspect carries (.npz inputs, a KServe request/response log, prompts), cache them in the DB as a group of their own, and match against it.",
    ),
]
ReplayModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        help="With --replay: the model (zoo name or ONNX file), when neither the suspect nor the DB names one.",
        show_default=False,
    ),
]
ChatsOpt = Annotated[
    Path | None,
    typer.Option(
        "--probes",
        metavar="FILE",
        help="A language model's answers not in the DB are estimated (hspi db estimator) on the chats they answer: their probe-set file (default: the model's built-in chats).",
        show_default=False,
    ),
]


def run_match(
    suspect_path: Path,
    db: Path,
    classifier: Path | None,
    quiet: bool,
    replay: bool = False,
    model: str | None = None,
    platforms: list[str] | None = None,
):
    """(the match report, the DB platforms of the suspect's model, the replay plan or None)."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError
    from hspi_onnx.match.session import match_suspect
    from hspi_onnx.match.suspect import load_suspect

    if (model or platforms) and not replay:
        raise HspiError("--model and -p choose what --replay runs: add --replay")
    suspect = load_suspect(suspect_path)
    plan = None
    if replay:
        suspect, plan = _replay(suspect, db, model, platforms, quiet)
    err = console(stderr=True)
    with ExitStack() as stack:  # a bar only while a missing or stale digest index is built
        bar = {}

        def on_index(shards: int) -> None:
            bar["bar"] = stack.enter_context(progress(quiet))
            bar["task"] = bar["bar"].add_task("digest index", total=shards)

        report = match_suspect(
            suspect,
            ReferenceDB(db),
            classifier,
            warn=lambda m: err.print(f"warning: {m}"),
            on_index=on_index,
            on_shard=lambda: bar["bar"].advance(bar["task"]),
        )
    return report, report.evidence.db_platforms, plan


def _replay(suspect, db: Path, model: str | None, platforms: list[str] | None, quiet: bool):
    """Build the candidate platforms over the suspect's own inputs into DB (cached), with bars."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.replay import plan_replay, replayed_suspect, resolve_replay_model
    from hspi_onnx.run.runner import Runner

    from .db import build_with_bars

    ref = ReferenceDB(db, create=True)
    info = resolve_replay_model(ref, suspect, model)
    plan = plan_replay(ref, suspect, info, platforms)
    err = console(stderr=True)
    with Runner() as runner:
        summary = build_with_bars(
            ref, info, plan.probes, None, False, runner, quiet, quiet, err, [(a, p) for a, p in plan.plan]
        )
    plan.summary = summary
    if not quiet:
        err.print(
            f"replay {plan.probes.name}: {len(plan.probes)} inputs, {len(summary.built)} platform(s) run, "
            f"{len(summary.skipped)} cached, {len(summary.failed)} failed, {len(plan.missing)} of the DB's "
            "not available here",
            highlight=False,
        )
    return replayed_suspect(suspect, plan), plan


def _generation_report(suspect: Path, db: Path, classifier: Path | None, replay: bool):
    """(the match report, the suspect, its chats or None) of a language-model suspect
    (``hspi-generation/1``), None for the others."""
    from hspi_onnx.match.generation import is_generation_file

    if not is_generation_file(suspect):
        return None
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError
    from hspi_onnx.match.generation import match_generation, read_generation

    if classifier or replay:
        raise HspiError("an hspi-generation/1 suspect is matched exactly; --classifier and --replay do not apply")
    gen = read_generation(suspect)
    return match_generation(ReferenceDB(db), gen), gen, None


def _chat_replay_report(suspect: Path, db: Path, model: str | None, platforms: list[str] | None, quiet: bool):
    """(the match report, the suspect, its chats) of a replayed chat log (match/chat_replay.py),
    None for other suspects."""
    from hspi_onnx.match.chat_replay import is_chat_log

    if not is_chat_log(suspect):
        return None
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError
    from hspi_onnx.match.chat_replay import read_chat_log, replay_chats
    from hspi_onnx.match.generation import match_generation
    from hspi_onnx.match.replay import plan_replay
    from hspi_onnx.run.runner import Runner

    from .db import build_with_bars

    ref = ReferenceDB(db, create=True)
    models = [m for m in ref.manifest().models.values() if m.zoo] if ref.manifest_path.is_file() else []
    if model is None and len({m.zoo for m in models}) != 1:
        raise HspiError("name the language model to replay the chats on with --model (e.g. smollm2)")
    from hspi_onnx.inputs.model import resolve_model

    name = model or models[0].zoo
    assert name is not None  # a zoo model of the DB, or --model
    info = resolve_model(name)
    probes, gen = replay_chats(info, read_chat_log(suspect))
    plan = plan_replay(ref, None, info, platforms, probes=probes)
    err = console(stderr=True)
    with Runner() as runner:
        summary = build_with_bars(ref, info, plan.probes, None, False, runner, quiet, quiet, err, plan.plan)
    plan.summary = summary
    gen.path = str(suspect)
    if gen.queries and gen.queries[0].likelihood:
        from hspi_onnx.match.likelihood import likelihood_report

        report = likelihood_report(ref, gen)
    else:
        report = match_generation(ref, gen)
    report["replay"] = plan.as_dict()
    return report, gen, probes


def _language_model_report(suspect, db, classifier, replay, model, platforms, probes, quiet) -> dict | None:
    """A language-model suspect's match report, with estimates where no DB class fits it (the DB's
    estimator, cli/estimates.py); None for other suspects."""
    found = _chat_replay_report(suspect, db, model, platforms, quiet) if replay else None
    found = found or _generation_report(suspect, db, classifier, replay)
    if found is None:
        return None
    report, gen, chats = found
    from .estimates import estimate_suspect

    estimates = estimate_suspect(db, report, gen, chats if chats is not None else probes, quiet)
    if estimates is not None:
        report["estimates"] = estimates
    return report


def print_estimates(estimates: dict, indent: str = "") -> None:
    out = console()
    if estimates["status"] != "estimated":
        out.print(indent + estimates["status"], highlight=False, soft_wrap=True)
        return
    names = {"weights": "weights", "compute": "compute", "kv": "KV cache"}
    cells = []
    for attr, probs in estimates["attributes"].items():
        best, p = next(iter(probs.items()))
        cells.append(f"{names.get(attr, attr)} {best} (p={p:.2f})")
    near = estimates["nearest"][0]["platform"] if estimates["nearest"] else "-"
    grid = [f"{dtype} at {share:.0%} of positions" for dtype, share in estimates["logits"].items() if share > 0]
    lines = [
        f"nearest DB platform by the evidence: {near}",
        f"estimated from {estimates['requests']} answers: " + ", ".join(cells),
        "logits' grid in the printed log-probabilities: " + (", ".join(grid) or "none (float32 or wider)"),
    ]
    for line in lines:
        out.print(indent + line, highlight=False, soft_wrap=True)
    if "note" in estimates:
        out.print(f"{indent}[yellow]note[/yellow] {estimates['note']}", highlight=False, soft_wrap=True)


def print_generation(report: dict) -> None:
    out = console()
    out.print(
        f"suspect {report['suspect']}: {report['queries']} chats, {report['tokens']} generated tokens "
        f"({report['evidence']}), model {report['model']}, probe set {report['probes']}"
    )
    out.print(f"verdict: {report['verdict']} ({len(report['classes'])} of the DB's classes fit)")
    if "likelihood" in report:
        lk = report["likelihood"]
        out.print(
            f"likelihood: {lk['tokens_used']} of {lk['tokens']} tokens scored ({lk['tokens_left_out']} outside a "
            f"stack's top-k); a stack is rejected once the most likely one is {lk['threshold_nats']:.2f} nats "
            f"ahead (at most {lk['alpha']:g} chance to reject the true stack)",
            highlight=False,
        )
        for label, s in sorted(lk["stacks"].items(), key=lambda kv: -kv[1]["loglik"]):
            state = f"rejected after {s['tokens_needed']} tokens" if s["rejected"] else "not rejected"
            out.print(f"  {s['loglik']:10.3f} nats  {state:28}  {label}", highlight=False, soft_wrap=True)
    for c in report["classes"]:
        out.print(f"  class {c['id']}:")
        for label in c["platforms"]:
            out.print(f"    {label}")
    if "estimates" in report:
        print_estimates(report["estimates"])


def match_cmd(
    suspect: SuspectArg,
    db: DbOpt,
    classifier: ClassifierOpt = None,
    replay: ReplayOpt = False,
    model: ReplayModelOpt = None,
    platforms: PlatformsOpt = None,
    probes: ChatsOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Which platform produced SUSPECT: exact digest lookup first, the classifier second.
    With --replay, on the inputs the suspect carries instead of a DB probe set (a language
    model's chat log: its chats teacher-forced with the logged answers)."""
    generation = _language_model_report(suspect, db, classifier, replay, model, platforms, probes, quiet or as_json)
    if generation is not None:
        emit_json(generation) if as_json else print_generation(generation)
        return
    report, _, plan = run_match(suspect, db, classifier, quiet or as_json, replay, model, platforms)
    if as_json:
        emit_json(_with_replay(report.as_dict(), plan))
    else:
        print_match(report)


def verify_cmd(
    suspect: SuspectArg,
    db: DbOpt,
    claim: ClaimOpt,
    classifier: ClassifierOpt = None,
    replay: ReplayOpt = False,
    model: ReplayModelOpt = None,
    platforms: PlatformsOpt = None,
    probes: ChatsOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Is SUSPECT consistent with CLAIM? Exit 0 CONSISTENT, 1 INCONSISTENT, 3 INCONCLUSIVE."""
    from hspi_onnx.match.claims import parse_claim, verify

    wanted = parse_claim(claim)
    generation = _language_model_report(suspect, db, classifier, replay, model, platforms, probes, quiet or as_json)
    if generation is not None:
        from hspi_onnx.match.generation import verify_generation

        checked = verify_generation(generation, wanted)
        if as_json:
            emit_json({**checked, "match": generation})
        else:
            print_generation(generation)
            console().print(f"claim {claim}: {checked['status']} ({checked['reason']})")
        raise typer.Exit({"CONSISTENT": 0, "INCONSISTENT": 1}.get(checked["status"], 3))
    report, platforms_, plan = run_match(suspect, db, classifier, quiet or as_json, replay, model, platforms)
    result = verify(report, wanted, platforms_)
    if as_json:
        emit_json({**result.as_dict(), "match": _with_replay(report.as_dict(), plan)})
    else:
        print_match(report)
        print_verify(result)
    raise typer.Exit(result.exit_code)


def _with_replay(doc: dict, plan) -> dict:
    if plan is not None:
        doc["replay"] = plan.as_dict()
    return doc


def print_match(report) -> None:
    out = console()
    ev, v = report.evidence, report.verdict
    s, ex = ev.suspect, ev.exact
    out.print(
        f"suspect {s.path}: {s.queries} queries, {s.form} ({s.format}, {s.dtype}), model {s.model}, "
        f"probe set {s.probe_set}, output {', '.join(s.outputs)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"exact ({ex.kind}): {ex.matched_queries}/{ex.queries} queries match DB platforms; "
        f"{len(ex.common)} platform(s) match all",
        highlight=False,
    )
    out.print(f"[bold]verdict: {v.status}[/bold] ({v.strength} evidence)", highlight=False)
    for p in v.platforms[:12]:
        out.print(f"  {p}", highlight=False, soft_wrap=True)
    if len(v.platforms) > 12:
        out.print(f"  ... and {len(v.platforms) - 12} more", highlight=False)
    if v.attributes:
        out.print("  shared by all: " + ", ".join(f"{k}={val}" for k, val in v.attributes.items()), highlight=False)
    for line in v.evidence:
        out.print(f"  - {line}", highlight=False, soft_wrap=True)
    if ev.stats is not None:
        out.print("classifier (calibrated probabilities for all queries together):", highlight=False)
        for t, post in ev.stats.targets.items():
            if t == "platform":
                continue
            tops = ", ".join(f"{val} {p:.3f}" for val, p in post.top)
            note = v.undetermined.get(t) or ("" if post.confident else "not confident")
            out.print(f"  {t:<10} {tops}" + (f"   ({note})" if note else ""), highlight=False)
    if ex.ruled_out:
        out.print(
            f"ruled out ({len(ex.ruled_out)} of {ex.classes} classes; --json lists every platform):", highlight=False
        )
        for members in ex.ruled_out[:6]:
            more = f"  (+{len(members) - 1} bit-identical)" if len(members) > 1 else ""
            out.print(f"  {members[0]}{more}", highlight=False, soft_wrap=True)
        if len(ex.ruled_out) > 6:
            out.print(f"  ... and {len(ex.ruled_out) - 6} more classes", highlight=False)
    for near in (ev.nearest or [])[:3]:
        out.print(f"  near: {near.platform}  distance {near.distance}", highlight=False, soft_wrap=True)


def print_verify(result) -> None:
    out = console()
    claim = ",".join(f"{k}={v}" for k, v in result.claim.items())
    out.print(f"[bold]claim {claim}: {result.verdict}[/bold]", highlight=False)
    for line in result.evidence:
        out.print(f"  - {line}", highlight=False, soft_wrap=True)
