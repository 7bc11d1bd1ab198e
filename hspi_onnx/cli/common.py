"""Helpers shared by the command modules."""

from __future__ import annotations

import json
import sys

import typer

JSON = typer.Option(False, "--json", help="Print a JSON report instead of tables.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
MODEL = typer.Argument(..., help="Zoo model name (see `hspi models list`) or path to any ONNX file.")


def console(stderr: bool = False):
    from rich.console import Console

    import shutil

    # Piped output keeps whole labels on one line instead of rich's 80-column default.
    return Console(stderr=stderr, width=max(shutil.get_terminal_size((160, 24)).columns, 120))


def emit_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def progress(quiet: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console(stderr=True), disable=quiet, transient=False,
    )


def load_probe_arg(model, probes_path, kind, n, seed):
    """A probe set from a file, or generated for the model from kind/n/seed."""
    from hspi_onnx.inputs.probes import generate, load_probes

    if probes_path:
        probes = load_probes(probes_path)
        probes.check_fits(model.spec)
        return probes
    return generate(model.spec, kind, n=n, seed=seed)
