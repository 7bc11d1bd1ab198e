"""``hspi models``: the model zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, console, emit_json

app = typer.Typer(help="The model zoo: list and export models.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """List the zoo's models."""
    from hspi_onnx.models import ZOO

    rows = [{"name": e.name, "input": e.input_kind, "summary": e.summary} for e in ZOO.values()]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("name", "input", "summary", title="model zoo")
    for r in rows:
        table.add_row(r["name"], r["input"], r["summary"])
    console().print(table)


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="Zoo model name.", show_default=False)],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            metavar="PATH",
            help="Where to write the .onnx file (a folder: NAME.onnx inside it).",
            show_default=False,
        ),
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed the model is built from.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Build a zoo model and export it to ONNX (opset 17, dynamic batch axis), with its
    weights as NAME.weights.npz beside it. The export is checked against ONNX Runtime."""
    from hspi_onnx.inputs.model import open_model
    from hspi_onnx.models import export_model

    path = export_model(name, out, seed=seed)
    info = open_model(path)
    if as_json:
        emit_json(info.describe() | {"metadata": info.metadata})
        return
    acc = info.metadata.get("hspi.test_accuracy")
    extra = f", test accuracy {float(acc):.2%} on {info.metadata.get('hspi.test_size')} digits" if acc else ""
    console().print(f"wrote {path} (sha256 {info.sha256[:16]}…{extra})")
