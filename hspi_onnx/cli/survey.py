"""``hspi survey``: the main job on embedded defaults."""

from __future__ import annotations

import typer

from .common import JSON, QUIET, console, emit_json, progress


def _short(label: str) -> str:
    """runtime/precision/knobs: the version and device are the same for every row here."""
    runtime, _device, precision, knobs = label.split("/")
    return f"{runtime.split('@')[0]}/{precision}/{knobs}"


def survey(models: list[str] = typer.Option(None, "--model", "-m", help="Zoo name or ONNX path; repeatable. Default: the whole zoo."),
           platforms: list[str] = typer.Option(None, "--platforms", "-p", help="Platform glob(s). Default: every available variant."),
           n: int = typer.Option(32, "-n", help="Probes per model."),
           kind: str = typer.Option(None, help="Probe kind (default: noise / tokens)."),
           seed: int = typer.Option(0, help="Probe seed."),
           passes: int = typer.Option(2, min=1, help="Fresh-process passes; platforms that differ between passes are flagged."),
           quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Export the zoo, run every available CPU platform on a probe set in fresh processes,
    and print which platforms are bit-identical (equivalence classes), whether each repeats
    itself, and its error against a float64 reference."""
    from hspi_onnx.models import ZOO
    from hspi_onnx.run.survey import survey as run_survey

    spec = {"models": models or list(ZOO), "platforms": platforms, "n": n, "kind": kind, "seed": seed}
    with progress(quiet or as_json) as bar:
        tasks: dict[int, int] = {}

        def on_event(i: int, event: dict) -> None:
            if event["event"] == "plan":
                tasks[i] = bar.add_task(f"pass {i + 1}/{passes}", total=event["total"])
            elif event["event"] == "platform":
                bar.advance(tasks[i])

        report = run_survey(spec, on_event, passes=passes)
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
                          "\n".join(_short(p) for p in c["platforms"]))
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
