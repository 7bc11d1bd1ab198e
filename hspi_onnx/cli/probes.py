"""``hspi probes``: make probe sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DimOpt, JsonOpt, KindOpt, ModelArg, NProbesOpt, SeedOpt, Split, console, emit_json, parse_dims

app = typer.Typer(help="Probe sets: seeded, hashed model inputs.", no_args_is_help=True)


@app.command("make")
def make(model: ModelArg,
         out: Annotated[Path, typer.Option("-o", "--output", metavar="PATH", help="Where to write the .npz file.", show_default=False)],
         kind: KindOpt = None, n: NProbesOpt = 64, seed: SeedOpt = 0, dim: DimOpt = None,
         split: Annotated[Split, typer.Option("--split", help="probe, or calib for the calibration split.")] = Split.probe,
         as_json: JsonOpt = False) -> None:
    """Generate a probe set for MODEL (one array per model input) and save it as .npz (no
    pickle) with ids and a content hash."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    info = resolve_model(model)
    probes = generate(info, kind.value if kind else None, n=n, seed=seed, split=split.value, dims=parse_dims(dim))
    probes.save(out)
    if as_json:
        emit_json(probes.meta() | {"path": str(out)})
    else:
        shapes = ", ".join(f"{k} {list(v.shape[1:])} {v.dtype}" for k, v in probes.inputs.items())
        console().print(f"wrote {out}: {len(probes)} {probes.kind} probes ({shapes}), sha256 {probes.sha256[:16]}…",
                        highlight=False)
