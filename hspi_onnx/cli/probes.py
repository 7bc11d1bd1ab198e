"""``hspi probes``: make probe sets."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON, MODEL, console, emit_json

app = typer.Typer(help="Probe sets: seeded, hashed model inputs.", no_args_is_help=True)


@app.command("make")
def make(model: str = MODEL,
         out: Path = typer.Option(..., "-o", "--output", help="Where to write the .npz file."),
         kind: str = typer.Option(None, help="noise | images (image inputs); tokens | text (token inputs). "
                                              "Default: noise or tokens."),
         n: int = typer.Option(64, "-n", help="Number of probes."),
         seed: int = typer.Option(0, help="Seed."),
         split: str = typer.Option("probe", help="probe, or calib for the calibration split."),
         as_json: bool = JSON) -> None:
    """Generate a probe set for MODEL and save it as .npz (no pickle) with ids and a hash."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    info = resolve_model(model)
    probes = generate(info.spec, kind, n=n, seed=seed, split=split)
    probes.save(out)
    if as_json:
        emit_json(probes.meta() | {"path": str(out)})
    else:
        console().print(f"wrote {out}: {len(probes)} {probes.kind} probes, sha256 {probes.sha256[:16]}…")
