"""``hspi train`` and ``hspi eval``: the platform classifier and its held-out evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DbOpt,
    Form,
    JsonOpt,
    Method,
    ModelsOpt,
    OutputNameOpt,
    Protocol,
    QueriesOpt,
    QuietOpt,
    TargetsOpt,
    console,
    emit_json,
    progress,
    values,
)

SeedArg = Annotated[int, typer.Option("--seed", help="Random seed (probe split, query groups, CatBoost).")]


def train(
    db: DbOpt,
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="PATH", help="Classifier directory to write.", show_default=False)
    ],
    form: Annotated[Form, typer.Option("--form", help="Output form the suspects will have.")] = Form("raw"),
    method: Annotated[
        Method, typer.Option("--method", help="catboost (ours) or svm-bits (the paper's baseline).")
    ] = Method("catboost"),
    queries: Annotated[
        int,
        typer.Option("--queries", min=1, help="svm-bits only: queries per example (the baseline is fitted for one n)."),
    ] = 8,
    models: ModelsOpt = None,
    targets: TargetsOpt = None,
    output_name: OutputNameOpt = None,
    iterations: Annotated[
        int, typer.Option("--iterations", min=1, help="CatBoost boosting iterations per target.")
    ] = 150,
    rows_per_platform: Annotated[
        int, typer.Option("--rows-per-platform", min=1, help="Training rows drawn per (model, platform).")
    ] = 250,
    seed: SeedArg = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train one classifier per target (the platform's equivalence class and each attribute)
    on every probe of the DB, and save it (CatBoost native format + JSON; no pickle)."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.learn.training import fit_and_save

    err = console(stderr=True)
    with progress(quiet or as_json) as bar:
        task = {}

        def on_stage(name: str, total: int) -> None:
            task["id"] = bar.add_task(name, total=total)

        report = fit_and_save(
            ReferenceDB(db),
            output,
            form.value,
            method.value,
            queries=queries,
            models=models,
            targets=targets,
            output_name=output_name,
            iterations=iterations,
            rows_per_platform=rows_per_platform,
            seed=seed,
            on_stage=on_stage,
            on_step=lambda: bar.advance(task["id"]),
            warn=lambda m: err.print(f"warning: {m}"),
        )
    method, form, classes, timings = report["method"], report["form"], report["targets"], report["train_seconds"]
    seconds, t_features = report["seconds"], report["feature_seconds"]
    if as_json:
        emit_json(report)
        return
    out = console()
    out.print(
        f"trained {method} on {report['platforms']} platforms, {report['rows']} rows ({form}) in "
        f"{seconds:.1f} s (features {t_features:.1f} s) -> {output}"
    )
    for t, k in classes.items():
        out.print(f"  {t}: {k} classes, {timings.get(t, 0):.1f} s")


def eval_cmd(
    db: DbOpt,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots", help="Write PNG plots (accuracy vs queries, confusion matrices) here.", show_default=False
        ),
    ] = None,
    protocols: Annotated[
        list[Protocol] | None,
        typer.Option("--protocol", help="Protocol; repeatable. Default: all.", show_default=False),
    ] = None,
    methods: Annotated[
        list[Method] | None,
        typer.Option(
            "--method", help="catboost (ours), svm-bits (baseline); repeatable. Default: both.", show_default=False
        ),
    ] = None,
    forms: Annotated[
        list[Form] | None,
        typer.Option("--form", help="Degraded form to test; repeatable. Default: all.", show_default=False),
    ] = None,
    queries: QueriesOpt = None,
    models: ModelsOpt = None,
    targets: TargetsOpt = None,
    output_name: OutputNameOpt = None,
    test_frac: Annotated[
        float, typer.Option("--test-frac", min=0.01, max=0.99, help="Fraction of each model's probes held out.")
    ] = 0.3,
    groups_per_platform: Annotated[
        int, typer.Option("--groups-per-platform", min=1, help="Test query groups drawn per platform and n.")
    ] = 40,
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="CatBoost iterations per target.")] = 80,
    rows_per_platform: Annotated[
        int, typer.Option("--rows-per-platform", min=1, help="Training rows drawn per (model, platform).")
    ] = 100,
    seed: SeedArg = 0,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="PATH", help="Also write the JSON report here.", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Held-out evaluation: random probe split, leave-one-runtime-out, leave-one-model-out and
    degraded outputs, ours side by side with the paper's svm-bits baseline, for n queries."""
    import json

    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError
    from hspi_onnx.forms import DEGRADED
    from hspi_onnx.learn.classify import CatBoostParams
    from hspi_onnx.learn.evaluate import METHODS, N_QUERIES, PROTOCOLS, EvalConfig, evaluate

    if "raw" in (values(forms) or ()):
        raise HspiError("raw is not a degraded form (the split protocol covers it)")
    cfg = EvalConfig(
        test_frac=test_frac,
        seed=seed,
        queries=tuple(sorted(set(queries or N_QUERIES))),
        methods=tuple(values(methods) or METHODS),
        targets=targets or None,
        protocols=tuple(values(protocols) or PROTOCOLS),
        forms=tuple(values(forms) or DEGRADED),
        max_groups_per_unit=groups_per_platform,
        params=CatBoostParams(iterations=iterations, seed=seed, max_rows_per_unit=rows_per_platform),
    )
    err = console(stderr=True)
    with progress(quiet or as_json) as bar:
        task = bar.add_task("evaluating", total=None)

        log = not (quiet or as_json) and not err.is_terminal  # logs get one line per step instead of a bar

        started = {"n": 0}

        def on_step(desc: str, total: int) -> None:  # called as each step starts
            started["n"] += 1
            if log:
                err.print(f"[{started['n']}/{total}] {desc}", highlight=False)
            bar.update(task, total=total, completed=started["n"] - 1, description=desc[:60])

        report = evaluate(
            ReferenceDB(db), cfg, models or None, on_step, warn=lambda m: err.print(f"warning: {m}"), output=output_name
        )
        bar.update(task, completed=bar.tasks[0].total or 0, description="done")
    if plots:
        from hspi_onnx.learn.plots import write_plots

        report.plots = [str(p) for p in write_plots(report, plots)]
    if output:
        output.write_text(json.dumps(report.as_dict(), indent=1, sort_keys=True), "utf-8")
    if as_json:
        emit_json(report.as_dict())
        return
    print_report(report)


def print_report(report) -> None:
    from rich.table import Table

    from hspi_onnx.learn.results import losses, table_rows, unpredictable

    out = console()
    queries = report.queries
    table = Table(
        "protocol",
        "target",
        *[f"n={n}" for n in queries],
        "ceiling",
        "groups",
        title=f"accuracy, ours / svm-bits: {report.platforms} platforms of "
        f"{', '.join(report.models)}; test probes {report.test_probes}",
        show_lines=False,
    )
    rows = table_rows(report)
    for row in rows:
        table.add_row(row["case"], row["target"], *row["cells"], row["ceiling"], row["groups"])
    out.print(table)
    lost = losses(report)
    out.print(
        f"ours loses to svm-bits in {len(lost)} of {len(rows) * len(queries)} cells"
        + (": " + "; ".join(lost[:12]) + (" …" if len(lost) > 12 else "") if lost else ""),
        soft_wrap=True,
    )
    unseen = unpredictable(report)
    if unseen:
        out.print("not predictable (values the training side lacks): " + "; ".join(unseen), soft_wrap=True)
    out.print(f"{report.seconds:.0f} s in all; plots: {len(report.plots)}")
