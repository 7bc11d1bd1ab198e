"""``hspi demo``: build, train, evaluate, then identify a hidden platform from its outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import QuietOpt, console, progress


def demo(
    out: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="PATH", help="Directory for the DB, classifier, plots and suspect file."
        ),
    ] = Path("hspi-demo"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller run: the digits model, the LM on 4 platforms, 120 probes.")
    ] = False,
    probes: Annotated[
        int | None,
        typer.Option("-n", min=1, help="Probes per model (default 300; 120 with --quick).", show_default=False),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the black box's choice (default: random, printed).", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """End to end on this machine: build the default DB, train, evaluate (plots), run a
    platform chosen at random as a black box behind `hspi serve` (KServe v2 over localhost),
    query it with `hspi query`, match its answers, verify a true and a false claim; then the
    same with the language model behind the OpenAI-compatible endpoint; then audit an LLM
    endpoint (SmolLM2 on llama.cpp Q4_K_M claimed as transformers bf16) and write its report."""
    import numpy as np

    from hspi_onnx.demo import (
        LLM_CHATS,
        LLM_FALSE_CLAIM,
        LLM_PLATFORMS,
        DemoConfig,
        build_db,
        evaluate_for_plots,
        language_models,
        llm_available,
        new_seed,
        play_black_box,
        play_llm_audit,
        train_classifier,
    )
    from hspi_onnx.match.claims import parse_claim, verify
    from hspi_onnx.match.identify import names_platform

    from .common import short_label
    from .match import print_match, print_verify, run_match

    t0 = time.perf_counter()
    seed = new_seed() if seed is None else seed
    cfg = DemoConfig.quick(out, seed) if quick else DemoConfig(out, seed=seed)
    if probes:
        cfg.probes = probes
    cfg.out.mkdir(parents=True, exist_ok=True)
    con = console()
    timings = {}

    con.print(
        f"[bold]1. reference DB[/bold]: {', '.join(cfg.models)} x every available CPU platform, "
        f"{cfg.probes} probes -> {cfg.out / 'db'}",
        highlight=False,
    )
    with progress(quiet) as bar:
        tasks: dict[str, int] = {}

        def on_event(model: str, kind: str, data: dict) -> None:
            if kind == "plan":
                tasks[model] = bar.add_task(f"build {model}", total=data["total"])
            elif kind in ("built", "skipped", "failed"):
                bar.advance(tasks[model])

        db, built = build_db(cfg, on_event)
    for info, _, s in built:
        con.print(
            f"   {info.name}: {len(s.built)} built, {len(s.skipped)} already there, {len(s.failed)} failed",
            highlight=False,
        )
    timings["db"] = time.perf_counter() - t0

    con.print("[bold]2. classifier[/bold] (CatBoost per target)", highlight=False)
    with progress(quiet) as bar:
        feat = bar.add_task("features", total=sum(len(s.built) + len(s.skipped) for _, _, s in built))
        tgt = bar.add_task("targets", total=None)
        clf, clf_path, trained = train_classifier(
            db, cfg, lambda: bar.advance(feat), lambda name, sec: bar.advance(tgt)
        )
    con.print(f"   {'trained' if trained else 'up to date'}: {len(clf.targets)} targets -> {clf_path}", highlight=False)
    timings["train"] = time.perf_counter() - t0 - sum(timings.values())

    con.print("[bold]3. held-out evaluation[/bold] (random probe split, ours vs svm-bits)", highlight=False)
    with progress(quiet) as bar:
        task = bar.add_task("evaluating", total=None)

        def on_step(desc: str, total: int) -> None:
            bar.update(task, total=total, advance=1, description=desc[:50])

        report, plots = evaluate_for_plots(db, cfg, on_step)
    n8 = max(n for n in cfg.eval_queries if n <= 8)
    accs = {r.target: r.accuracy for r in report.records if r.method == "catboost" and r.n == n8}
    con.print(f"   accuracy at n={n8}: " + ", ".join(f"{t} {100 * a:.0f}%" for t, a in accs.items()), highlight=False)
    timings["eval"] = time.perf_counter() - t0 - sum(timings.values())

    boxes = [("4", "kserve-v2", "KServe v2 responses")]
    if language_models(built):
        boxes.append(("5", "openai", "top-5 log-probabilities of the next token"))
    ok = True
    for step, protocol, what in boxes:
        con.print(
            f"[bold]{step}. black box over {protocol}[/bold] (seed {seed}): hspi serve runs a hidden platform; "
            f"hspi query asks it {cfg.queries} probes over localhost",
            highlight=False,
        )
        box = play_black_box(db, built, cfg, np.random.default_rng(seed), protocol)
        con.print(f"   {box.model}: its answers ({what}) -> {box.suspect}; server stopped", highlight=False)
        # the classifier was trained on raw outputs: the log-probabilities are matched on exact evidence
        match_report, platforms, _ = run_match(
            box.suspect, db.root, clf_path if protocol == "kserve-v2" else None, True
        )
        print_match(match_report)
        results = []
        for claim in (box.true_claim, box.false_claim):
            res = verify(match_report, parse_claim(claim), platforms)
            print_verify(res)
            results.append(res.verdict)
        found, sibling = names_platform(match_report, box.label)
        con.print(f"   reveal: the hidden platform was {box.label}", highlight=False, soft_wrap=True)
        if sibling:
            con.print(
                f"   its outputs depend on what shares its batch (recorded at build): served one request at a time "
                f"it computes what {short_label(sibling)} computes, which the matcher named",
                highlight=False,
            )
        con.print(
            f"   matcher {'named it' if found else 'did NOT name it'} ({match_report.verdict.status}); "
            f"true claim -> {results[0]}, false claim -> {results[1]}",
            highlight=False,
        )
        ok = ok and found and results == ["CONSISTENT", "INCONSISTENT"]
    timings["match"] = time.perf_counter() - t0 - sum(timings.values())

    reports = []
    why_not = llm_available()
    if why_not:
        con.print(f"[bold]6. LLM audit[/bold]: skipped ({why_not})", highlight=False)
    else:
        con.print(
            f"[bold]6. LLM audit[/bold]: SmolLM2 on {len(LLM_PLATFORMS)} stacks ({LLM_CHATS} chats) -> "
            f"{cfg.out / 'llm-db'}; hspi serve runs one behind the OpenAI chat API, its provider claims "
            f"{LLM_FALSE_CLAIM}",
            highlight=False,
        )
        with progress(quiet) as bar:
            task = bar.add_task("build smollm2", total=None)

            def on_llm(kind: str, data: dict) -> None:
                if kind == "plan":
                    bar.update(task, total=data["total"])
                elif kind in ("built", "skipped", "failed"):
                    bar.advance(task)

            served, docs = play_llm_audit(cfg, on_llm)
        wanted = ["INCONSISTENT", "CONSISTENT"]
        for doc, want in zip(docs, wanted):
            claim = ",".join(f"{k}={v}" for k, v in doc["claim"].items())
            con.print(f"   claim {claim}: {doc['verdict']} ({doc['strength']['summary']})", highlight=False)
            con.print(f"     report {Path(doc['report']).resolve().as_uri()}", highlight=False, soft_wrap=True)
            reports.append(doc["report"])
        con.print(f"   reveal: the served stack was {served}", highlight=False, soft_wrap=True)
        named = all(doc["identified"] and doc["best_match"] == served for doc in docs)
        con.print(
            f"   audit {'named it' if named else 'did NOT name it'}; verdicts "
            f"{' and '.join(d['verdict'] for d in docs)} (expected {' and '.join(wanted)})",
            highlight=False,
        )
        ok = ok and named and [d["verdict"] for d in docs] == wanted
        timings["llm audit"] = time.perf_counter() - t0 - sum(timings.values())

    con.print(
        f"   DB {cfg.out / 'db'}, classifier {clf_path}, plots {cfg.out / 'plots'} ({len(plots)} PNG), "
        f"eval report {cfg.out / 'eval.json'}",
        highlight=False,
    )
    con.print(
        "   time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f", total {time.perf_counter() - t0:.0f} s",
        highlight=False,
    )
    if reports:
        con.print(f"open the LLM audit report: {Path(reports[0]).resolve().as_uri()}", highlight=False, soft_wrap=True)
        _open(Path(reports[0]))
    if not ok:
        raise typer.Exit(1)


def _open(path: Path) -> None:
    """Open the report in a browser where this session has a display (printed above in any case)."""
    import os
    import webbrowser

    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("BROWSER"):
        webbrowser.open(path.resolve().as_uri())
