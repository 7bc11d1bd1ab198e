"""``hspi run``: one model on one platform over a probe set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DimOpt,
    InProcessOpt,
    JsonOpt,
    KindOpt,
    ModelArg,
    NProbesOpt,
    ProbesOpt,
    QuietOpt,
    SeedOpt,
    console,
    emit_json,
    load_probe_arg,
    progress,
)


def run(
    model: ModelArg,
    platform: Annotated[
        str,
        typer.Option(
            "--platform",
            "-p",
            help="One platform: an exact label or a glob that selects one (see `hspi runtimes variants MODEL`).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="PATH", help="Where to write every output (.npz).", show_default=False),
    ],
    probes: ProbesOpt = None,
    kind: KindOpt = None,
    n: NProbesOpt = 64,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    in_process: InProcessOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run MODEL on one platform (in a worker process) and write every output losslessly with
    per-output digests."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.run.adapter import resolve_platform
    from hspi_onnx.run.runner import Runner

    info = resolve_model(model)
    probe_set = load_probe_arg(info, probes, kind, n, seed, dim)
    adapter, plat = resolve_platform(platform, info, probe_set.kind)
    with progress(quiet or as_json) as bar, Runner(in_process=in_process) as runner:
        task = bar.add_task(f"{info.name} on {plat.runtime}/{plat.precision}", total=len(probe_set))
        result = runner.run(adapter, info, plat, probe_set, on_batch=lambda k: bar.advance(task, k))
    result.save(out)
    summary = {
        "output": str(out),
        "platform": str(plat),
        "model": info.name,
        "model_sha256": info.sha256,
        "probes": probe_set.name,
        "probes_sha256": probe_set.sha256,
        "n": len(probe_set),
        "outputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in result.outputs.items()},
        "digest": result.set_digest(),
        "seconds": round(result.seconds, 4),
    }
    if as_json:
        emit_json(summary)
    else:
        shown = ", ".join(f"{k} {v.dtype}{list(v.shape[1:])}" for k, v in result.outputs.items())
        console().print(
            f"wrote {out}: {len(probe_set)} probes, outputs {shown} from {plat} "
            f"(digest {summary['digest']}, {result.seconds:.2f} s)",
            highlight=False,
            soft_wrap=True,
        )
