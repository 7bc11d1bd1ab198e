"""``hspi probes``: make probe sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DbOpt,
    DimOpt,
    JsonOpt,
    KindOpt,
    ModelArg,
    NProbesOpt,
    QuietOpt,
    SeedOpt,
    Split,
    console,
    emit_json,
    parse_dims,
    progress,
)

app = typer.Typer(help="Probe sets: seeded, hashed model inputs.", no_args_is_help=True)


@app.command("make")
def make(
    model: ModelArg,
    out: Annotated[
        Path, typer.Option("-o", "--output", metavar="PATH", help="Where to write the .npz file.", show_default=False)
    ],
    kind: KindOpt = None,
    n: NProbesOpt = 64,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    split: Annotated[Split, typer.Option("--split", help="probe, or calib for the calibration split.")] = Split.probe,
    chats: Annotated[
        Path | None,
        typer.Option(
            "--chats",
            metavar="FILE",
            help="A language model's prompts: OpenAI messages JSONL, one chat a line (default: the built-in set).",
            show_default=False,
        ),
    ] = None,
    sample_seed: Annotated[
        int | None,
        typer.Option(
            "--sample-seed",
            metavar="SEED",
            min=0,
            help="A language model's chats sampled (temperature 1) with this seed instead of greedy.",
            show_default=False,
        ),
    ] = None,
    continuations: Annotated[
        Path | None,
        typer.Option(
            "--continuations",
            metavar="FILE",
            help='Score these continuations teacher-forced, one JSON line per chat: {"text": ...} or {"tokens": [...]}.',
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a probe set for MODEL (one array per model input) and save it as .npz (no
    pickle) with ids and a content hash."""
    from hspi_onnx.errors import HspiError
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    info = resolve_model(model)
    if info.generation is not None:
        from hspi_onnx.inputs.chats import make_chat_probes

        probes = make_chat_probes(info, chats, n, sample_seed, continuations)
    elif chats or sample_seed is not None or continuations:
        raise HspiError(f"--chats, --sample-seed and --continuations are for language models; {info.name} is not one")
    else:
        probes = generate(info, kind.value if kind else None, n=n, seed=seed, split=split.value, dims=parse_dims(dim))
    probes.save(out)
    if as_json:
        emit_json(probes.meta() | {"path": str(out)})
    else:
        shapes = ", ".join(f"{k} {list(v.shape[1:])} {v.dtype}" for k, v in probes.inputs.items())
        console().print(
            f"wrote {out}: {len(probes)} {probes.kind} probes ({shapes}), sha256 {probes.sha256[:16]}…", highlight=False
        )


@app.command("border")
def border(
    model: ModelArg,
    db: DbOpt,
    out: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="PATH", help="Where to write the border probe set (.npz).", show_default=False
        ),
    ],
    n: Annotated[
        int,
        typer.Option(
            "-n",
            metavar="N",
            min=1,
            help="At most this many border probes (fewer once every class pair is separated by 3).",
        ),
    ] = 64,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            metavar="N",
            min=1,
            help="At most this many starting points (noise probes) to push to the boundary.",
        ),
    ] = 200,
    seed: SeedOpt = 0,
    steps: Annotated[
        int,
        typer.Option(
            "--steps", metavar="N", min=1, help="PGD steps per starting point (token inputs: substitution rounds)."
        ),
    ] = 200,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Craft border probes for MODEL: inputs on which the DB's equivalence classes return
    different top-1 labels (PGD on the model to the boundary, then bisection on the real runtimes;
    token inputs: greedy token substitutions towards a next-token tie), for label-only services.
    Build the DB on them with `hspi db build MODEL --probes PATH`."""
    from hspi_onnx.border.craft import craft
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model

    info = resolve_model(model)
    ref = ReferenceDB(db)
    with progress(quiet or as_json) as bar:
        task = bar.add_task("class pairs separated", total=None)

        def on_progress(d: dict) -> None:
            bar.update(
                task,
                total=d["pairs"],
                completed=d["separated"],
                description=f"{d['kept']} probes, {d['seeds']} seeds: class pairs separated",
            )

        result = craft(ref, info, target=n, max_seeds=seeds, seed=seed, steps=steps, on_progress=on_progress)
    result.probes.save(out)
    if as_json:
        emit_json(result.as_dict() | {"path": str(out), "name": result.probes.name})
        return
    d = result.as_dict()
    console().print(
        f"wrote {out}: {d['probes']} border probes separating {d['separated_pairs']} of {d['pairs']} pairs "
        f"of {d['classes']} classes ({d['separable_fraction']:.0%}); {d['seeds_tried']} seeds, "
        f"{d['candidates']} candidates, {d['runtime_calls']} runtime calls, {d['seconds']} s",
        highlight=False,
    )
    for key, why in result.unrunnable.items():
        console(stderr=True).print(f"not crafted for: {key[:100]}: {why}", highlight=False)
