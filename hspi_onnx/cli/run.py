"""``hspi run``: one model on one platform over a probe set."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON, MODEL, QUIET, console, emit_json, load_probe_arg, progress


def run(model: str = MODEL,
        platform: str = typer.Option(..., "--platform", "-p", help="Exact platform label (see `hspi runtimes variants MODEL`)."),
        probes: Path = typer.Option(None, "--probes", help="Probe-set .npz; default: generate one."),
        kind: str = typer.Option(None, help="Probe kind when generating."),
        n: int = typer.Option(64, "-n", help="Probes to generate."),
        seed: int = typer.Option(0, help="Seed when generating."),
        out: Path = typer.Option(..., "-o", "--output", help="Where to write the outputs (.npz)."),
        quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Run MODEL on one platform and write its outputs losslessly with per-output digests."""
    from hspi_onnx.run.adapter import resolve_platform
    from hspi_onnx.run.execute import run_platform
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.outputs import set_digest

    info = resolve_model(model)
    probe_set = load_probe_arg(info, probes, kind, n, seed)
    adapter, plat = resolve_platform(platform, info, probe_set.kind)
    with progress(quiet or as_json) as bar:
        task = bar.add_task(f"{info.name} on {plat.runtime}/{plat.precision}", total=len(probe_set))
        result = run_platform(adapter, info, plat, probe_set,
                              on_batch=lambda k: bar.advance(task, k))
    result.save(out)
    summary = {"output": str(out), "platform": str(plat), "model": info.name, "model_sha256": info.sha256,
               "probes": probe_set.name, "probes_sha256": probe_set.sha256, "n": len(probe_set),
               "dtype": result.dtype, "shape": list(result.outputs.shape),
               "digest": set_digest(result.digests()), "seconds": round(result.seconds, 4)}
    if as_json:
        emit_json(summary)
    else:
        console().print(f"wrote {out}: {len(probe_set)} outputs of {result.dtype} "
                        f"from {plat} (digest {summary['digest']}, {result.seconds:.2f} s)",
                        highlight=False, soft_wrap=True)
