"""``hspi survey``: the main job on embedded defaults; ``hspi survey knobs``: the knob survey."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .common import (
    InProcessOpt,
    JsonOpt,
    KindOpt,
    NProbesOpt,
    PlatformsOpt,
    QuietOpt,
    SeedOpt,
    console,
    emit_json,
    progress,
    short_label,
)


class What(str, Enum):
    classes = "classes"
    knobs = "knobs"


def survey(
    what: Annotated[
        What,
        typer.Argument(
            help="classes: bit-identical platforms of the zoo (default); knobs: which environment variables and settings move each family's bits, and whether its label moves with them."
        ),
    ] = What.classes,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Zoo name or ONNX path; repeatable. Default: the whole zoo.", show_default=False
        ),
    ] = None,
    platforms: PlatformsOpt = None,
    n: NProbesOpt = 32,
    kind: KindOpt = None,
    seed: SeedOpt = 0,
    passes: Annotated[
        int,
        typer.Option(
            "--passes",
            min=1,
            help="Passes, each with fresh worker processes; platforms that differ between passes are flagged.",
        ),
    ] = 2,
    in_process: InProcessOpt = False,
    knob: Annotated[
        list[str] | None,
        typer.Option(
            "--knob",
            help="knobs: vary only this environment variable or pinned setting (e.g. OPENBLAS_CORETYPE); repeatable. Default: every one.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export the zoo, run every available CPU platform on a probe set in fresh processes, and
    print which platforms are bit-identical (equivalence classes), whether each repeats itself,
    and its error against a float64 reference.

    ``hspi survey knobs`` runs one base platform per family and precision (``-p`` picks others)
    in fresh processes under each environment variable known to steer kernels and each setting
    the adapter pins, and prints whether the bits changed and whether the label did; a row where
    the bits changed and the label did not is a bug (exit 1)."""
    if what is What.knobs:
        _knobs(models or ["digits"], platforms, n, seed, knob, quiet, as_json)
        return
    from hspi_onnx.models import SMALL
    from hspi_onnx.run.survey import survey as run_survey

    spec = {
        "models": models or list(SMALL),
        "platforms": platforms,
        "n": n,
        "kind": kind.value if kind else None,
        "seed": seed,
    }
    with progress(quiet or as_json) as bar:
        tasks: dict[int, int] = {}

        def on_event(i: int, event: dict) -> None:
            if event["event"] == "plan":
                tasks[i] = bar.add_task(f"pass {i + 1}/{passes}", total=event["total"])
            elif event["event"] == "platform":
                bar.advance(tasks[i])

        report = run_survey(spec, on_event, passes=passes, in_process=in_process)
    report["n"] = n
    if as_json:
        emit_json(report)
        return
    _print(report)


def _print(report: dict) -> None:
    from rich.table import Table

    out = console()
    for m in report["models"]:
        table = Table(
            "class",
            "size",
            "max rel err vs fp64",
            "repeats",
            title=f"{m['model']}: {m['n_platforms']} platforms, {m['n_classes']} classes "
            f"of bit-identical outputs on {report['n']} probes ({m['probes']})",
            show_lines=True,
        )
        table.add_column("platforms (runtime/precision/knobs)", overflow="fold")
        for c in m["classes"]:
            err = "" if c["rel_err"] is None else f"{c['rel_err']:.1e}"
            table.add_row(
                str(c["id"]),
                str(len(c["platforms"])),
                err,
                "yes" if c["repeats"] else "[red]NO[/red]",
                "\n".join(short_label(p) for p in c["platforms"]),
            )
        out.print(table)
        for f in m["failed"]:
            out.print(f"[red]failed[/red] {f['platform']}: {f['error']}", highlight=False, soft_wrap=True)
        if m["not_repeating"]:
            out.print(
                f"[red]not bit-for-bit repeatable across {report['passes']} fresh processes:[/red] "
                + ", ".join(m["not_repeating"]),
                highlight=False,
                soft_wrap=True,
            )
    total = sum(m["n_platforms"] for m in report["models"])
    flagged = sum(len(m["not_repeating"]) for m in report["models"])
    out.print(
        f"{total} platform runs on {len(report['models'])} models; "
        f"{flagged} not repeatable across {report['passes']} fresh processes."
    )


def _knobs(models: list[str], platforms, n: int, seed: int, only: list[str] | None, quiet: bool, as_json: bool) -> None:
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.run.adapter import selected_variants
    from hspi_onnx.run.knobs import survey_knobs

    reports = []
    with progress(quiet or as_json) as bar:
        for ref in models:
            bases = None
            if platforms:
                info = resolve_model(ref)
                chosen = selected_variants(info, generate(info, n=1).kind, platforms)
                bases = [(a.name, str(p)) for a, p in chosen]
            task = bar.add_task(f"knobs on {ref}", total=None)

            def on_event(event: dict, task=task) -> None:
                if event["event"] == "plan":
                    bar.update(task, total=event["total"])
                else:
                    bar.advance(task)

            reports.append(survey_knobs(ref, n=n, seed=seed, bases=bases, on_event=on_event, only=only))
    if as_json:
        emit_json({"models": reports})
    else:
        for report in reports:
            _print_knobs(report)
    if any(r["bugs"] for r in reports):
        raise typer.Exit(1)


def _print_knobs(report: dict) -> None:
    from rich.table import Table

    out = console()
    colour = {"BUG": "[red]BUG[/red]", "labelled": "[green]labelled[/green]", "pinned": "[green]pinned[/green]"}

    def yes(value) -> str:
        return "" if value is None else ("yes" if value else "no")

    for base in report["bases"]:
        table = Table(
            "knob",
            "bits changed",
            "label changed",
            "verdict",
            title=f"{report['model']} on {short_label(base['base'])} ({report['n']} probes)",
            show_lines=False,
        )
        table.add_column("label change / error", overflow="fold")
        if base["error"] or not base["repeats"]:
            out.print(
                f"[red]baseline {base['base']}: {base['error'] or 'not repeatable in two fresh processes'}[/red]",
                highlight=False,
                soft_wrap=True,
            )
            continue
        for r in report["rows"]:
            if r["base"] != base["base"]:
                continue
            table.add_row(
                f"{r['knob']}={r['value']}" + (" (pin)" if r["kind"] == "setting" else ""),
                yes(r["bits_changed"]),
                yes(r["label_changed"]),
                colour.get(r["verdict"], r["verdict"]),
                r.get("label_diff") or r.get("error", ""),
            )
        out.print(table)
    out.print(
        f"{len(report['rows'])} variations on {len(report['bases'])} base platforms; "
        f"{report['bugs']} where the bits changed and the label did not."
    )
