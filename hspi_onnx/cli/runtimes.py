"""``hspi runtimes``: the installed adapters and their platform variants."""

from __future__ import annotations

from typing import Annotated, TypedDict

import typer

from .common import ExtraOpt, JsonOpt, KindOpt, ModelArg, PlatformsOpt, console, emit_json

app = typer.Typer(help="Runtime adapters: availability and platform variants.", no_args_is_help=True)


class RuntimeRow(TypedDict):
    """One adapter in ``hspi runtimes list`` (what ``--json`` prints)."""

    runtime: str
    version: str
    available: bool
    reason: str
    variants: int
    summary: str
    not_here: dict[str, str]  # what it offers elsewhere but not here, with why


@app.command("list")
def list_runtimes(
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose variants are counted.")] = "resnet",
    as_json: JsonOpt = False,
) -> None:
    """Each adapter, its version, availability (with the reason) and its variant count."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import default_kind
    from hspi_onnx.run.adapter import registry

    info = resolve_model(model)
    rows: list[RuntimeRow] = []
    for name, adapter in registry().items():
        status = adapter.available()
        count = len(adapter.variants(info, default_kind(info))) if status.ok and adapter.serves(info) else 0
        limits = adapter.limitations() if status.ok else {}
        rows.append(
            {
                "runtime": name,
                "version": adapter.version(),
                "available": status.ok,
                "reason": status.reason,
                "variants": count,
                "summary": adapter.summary,
                "not_here": limits,
            }
        )
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("runtime", "version", "available", f"variants ({info.name})", "notes", title="runtime adapters")
    from rich.markup import escape

    for r in rows:
        table.add_row(
            r["runtime"],
            r["version"],
            "yes" if r["available"] else "[red]no[/red]",
            str(r["variants"]),
            escape(r["reason"] or "; ".join([r["summary"], *(f"no {k}: {v}" for k, v in r["not_here"].items())])),
        )
    console().print(table)


@app.command("variants")
def variants(
    model: ModelArg,
    platforms: PlatformsOpt = None,
    kind: KindOpt = None,
    extra: ExtraOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Every platform label available on this machine for MODEL."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import default_kind
    from hspi_onnx.run.adapter import selected_variants

    info = resolve_model(model)
    labels = [p for _, p in selected_variants(info, kind.value if kind else default_kind(info), platforms, extra)]
    if as_json:
        emit_json([p.as_dict() for p in labels])
    else:
        for p in labels:
            print(p)


@app.command("resources")
def resources() -> None:
    """This machine's Ray custom resources, as JSON for `ray start --resources`: one per
    available runtime family and device kind, which distributed builds (hspi db build --ray)
    hold while a platform runs."""
    import json

    from hspi_onnx.run.cluster_node import node_resources

    print(json.dumps(node_resources(), sort_keys=True))
