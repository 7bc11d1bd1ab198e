"""``hspi survey``: the main job on embedded defaults."""

from __future__ import annotations

import typer

from typing import Annotated, Optional

from .common import (InProcessOpt, JsonOpt, KindOpt, NProbesOpt, PlatformsOpt, QuietOpt, SeedOpt, console, emit_json,
                     progress, short_label)


def survey(models: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Zoo name or ONNX path; repeatable. Default: the whole zoo.", show_default=False)] = None,
           platforms: PlatformsOpt = None, n: NProbesOpt = 32, kind: KindOpt = None, seed: SeedOpt = 0,
           passes: Annotated[int, typer.Option("--passes", min=1, help="Passes, each with fresh worker processes; platforms that differ between passes are flagged.")] = 2,
           in_process: InProcessOpt = False, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Export the zoo, run every available CPU platform on a probe set in fresh processes, and
    print which platforms are bit-identical (equivalence classes), whether each repeats itself,
    and its error against a float64 reference."""
    from hspi_onnx.models import ZOO
    from hspi_onnx.run.survey import survey as run_survey

    spec = {"models": models or list(ZOO), "platforms": platforms, "n": n, "kind": kind.value if kind else None,
            "seed": seed}
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
        table = Table("class", "size", "max rel err vs fp64", "repeats",
                      title=f"{m['model']}: {m['n_platforms']} platforms, {m['n_classes']} classes "
                            f"of bit-identical outputs on {report['n']} probes ({m['probes']})",
                      show_lines=True)
        table.add_column("platforms (runtime/precision/knobs)", overflow="fold")
        for c in m["classes"]:
            err = "" if c["rel_err"] is None else f"{c['rel_err']:.1e}"
            table.add_row(str(c["id"]), str(len(c["platforms"])), err,
                          "yes" if c["repeats"] else "[red]NO[/red]",
                          "\n".join(short_label(p) for p in c["platforms"]))
        out.print(table)
        for f in m["failed"]:
            out.print(f"[red]failed[/red] {f['platform']}: {f['error']}", highlight=False, soft_wrap=True)
        if m["not_repeating"]:
            out.print(f"[red]not bit-for-bit repeatable across {report['passes']} fresh processes:[/red] "
                      + ", ".join(m["not_repeating"]), highlight=False, soft_wrap=True)
    total = sum(m["n_platforms"] for m in report["models"])
    flagged = sum(len(m["not_repeating"]) for m in report["models"])
    out.print(f"{total} platform runs on {len(report['models'])} models; "
              f"{flagged} not repeatable across {report['passes']} fresh processes.")
