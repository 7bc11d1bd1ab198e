"""``hspi train`` and ``hspi eval``: the platform classifier and its held-out evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON, QUIET, console, emit_json, progress

DB = typer.Option(..., "--db", help="Reference DB directory.")
MODELS = typer.Option(None, "--model", "-m", help="Only this model (name or sha256); repeatable.")
TARGETS = typer.Option(None, "--target", "-t", help="Only this target (platform, runtime, precision, a knob); repeatable.")


def train(db: Path = DB,
          output: Path = typer.Option(..., "-o", "--output", help="Classifier directory to write."),
          form: str = typer.Option("raw", help="Output form the suspects will have (raw, round3..round7, softmax, top1, top5, argmax)."),
          method: str = typer.Option("catboost", help="catboost (ours) or svm-bits (the paper's baseline)."),
          queries: int = typer.Option(8, "-n", "--queries", help="svm-bits only: queries per example (the baseline is fitted for one n)."),
          models: list[str] = MODELS, targets: list[str] = TARGETS,
          iterations: int = typer.Option(150, help="CatBoost boosting iterations per target."),
          rows_per_platform: int = typer.Option(250, help="Training rows drawn per (model, platform)."),
          seed: int = typer.Option(0, help="Random seed."),
          quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Train one classifier per target (the platform's equivalence class and each attribute)
    on every probe of the DB, and save it (CatBoost native format + JSON; no pickle)."""
    import time

    from hspi_onnx.learn.classify import CatBoostParams
    from hspi_onnx.db.store import db_digest
    from hspi_onnx.learn.classify import train as fit
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.learn.forms import check_form
    from hspi_onnx.errors import HspiError
    from hspi_onnx.learn.examples import build_examples
    from hspi_onnx.db.store import ReferenceDB

    if method not in ("catboost", "svm-bits"):
        raise HspiError(f"unknown method {method!r}; use catboost or svm-bits")
    check_form(form)
    t0 = time.perf_counter()
    ref = ReferenceDB(db)
    groups = load_groups(ref, models or None)
    err = console(stderr=True)
    with progress(quiet or as_json) as bar:
        task = bar.add_task(f"features ({form})", total=sum(len(g.outputs) for g in groups))
        ex = build_examples(groups, form, ref.manifest(), warn=lambda m: err.print(f"warning: {m}"),
                            on_platform=lambda: bar.advance(task))
        t_features = time.perf_counter() - t0
        names = list(ex.targets(targets or None))
        task = bar.add_task("training", total=len(names))
        timings: dict[str, float] = {}

        def done(name: str, seconds: float) -> None:
            timings[name] = round(seconds, 2)
            bar.advance(task)

        if method == "catboost":
            params = CatBoostParams(iterations=iterations, seed=seed, max_rows_per_unit=rows_per_platform)
            clf = fit(ex, targets or None, params, on_target=done)
            clf.meta |= {"db": str(ref.root), "db_digest": db_digest(ref), "probes": int(len(set(zip(ex.model, ex.probe)))),
                         "method": "catboost", "params": vars(params)}
            clf.save(output)
            classes = {t: len(m.classes) for t, m in clf.targets.items()}
        else:
            from hspi_onnx.learn.baseline import save_svm_bits, train_svm_bits

            bundle = train_svm_bits(ex, targets or None, queries, seed, on_target=done)
            bundle["meta"] |= {"db": str(ref.root), "db_digest": db_digest(ref)}
            save_svm_bits(bundle, output)
            classes = {t: len(m.classes) for t, m in bundle["targets"].items()}
    seconds = time.perf_counter() - t0
    report = {"output": str(output), "method": method, "form": form, "rows": len(ex),
              "platforms": len(set(ex.label.tolist())), "targets": classes, "train_seconds": timings,
              "feature_seconds": round(t_features, 2), "seconds": round(seconds, 2)}
    if as_json:
        emit_json(report)
        return
    out = console()
    out.print(f"trained {method} on {report['platforms']} platforms, {report['rows']} rows ({form}) in "
              f"{seconds:.1f} s (features {t_features:.1f} s) -> {output}")
    for t, k in classes.items():
        out.print(f"  {t}: {k} classes, {timings.get(t, 0):.1f} s")


def eval_cmd(db: Path = DB,
             plots: Path = typer.Option(None, "--plots", help="Write PNG plots (accuracy vs queries, confusion matrices) here."),
             protocols: list[str] = typer.Option(None, "--protocol", "-p", help="split, loro, lomo, degraded; repeatable. Default: all."),
             methods: list[str] = typer.Option(None, "--method", help="catboost (ours), svm-bits (baseline); repeatable. Default: both."),
             forms: list[str] = typer.Option(None, "--form", help="Degraded forms to test; repeatable. Default: all."),
             queries: list[int] = typer.Option(None, "-n", "--queries", help="Query counts; repeatable. Default: 1 2 4 8 16 32."),
             models: list[str] = MODELS, targets: list[str] = TARGETS,
             test_frac: float = typer.Option(0.3, help="Fraction of each model's probes held out."),
             groups_per_platform: int = typer.Option(40, help="Test query groups drawn per platform and n."),
             iterations: int = typer.Option(80, help="CatBoost iterations per target."),
             rows_per_platform: int = typer.Option(100, help="Training rows drawn per (model, platform)."),
             seed: int = typer.Option(0, help="Random seed of the probe split and query groups."),
             output: Path = typer.Option(None, "-o", "--output", help="Also write the JSON report here."),
             quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Held-out evaluation: random probe split, leave-one-runtime-out, leave-one-model-out and
    degraded outputs, ours side by side with the paper's svm-bits baseline, for n queries."""
    import json

    from hspi_onnx.learn.classify import CatBoostParams
    from hspi_onnx.learn.forms import DEGRADED, check_form
    from hspi_onnx.errors import HspiError
    from hspi_onnx.learn.evaluate import METHODS, N_QUERIES, PROTOCOLS, EvalConfig, evaluate
    from hspi_onnx.db.store import ReferenceDB

    for p in protocols or ():
        if p not in PROTOCOLS:
            raise HspiError(f"unknown protocol {p!r}; protocols: {', '.join(PROTOCOLS)}")
    for m in methods or ():
        if m not in METHODS:
            raise HspiError(f"unknown method {m!r}; methods: {', '.join(METHODS)}")
    for f in forms or ():
        if check_form(f) == "raw":
            raise HspiError("raw is not a degraded form (the split protocol covers it)")
    if not 0 < test_frac < 1:
        raise HspiError("--test-frac must lie between 0 and 1")
    if any(q < 1 for q in queries or ()):
        raise HspiError("query counts must be at least 1")
    cfg = EvalConfig(test_frac=test_frac, seed=seed, queries=tuple(sorted(set(queries or N_QUERIES))),
                     methods=tuple(methods or METHODS), targets=targets or None,
                     protocols=tuple(protocols or PROTOCOLS), forms=tuple(forms or DEGRADED),
                     max_groups_per_unit=groups_per_platform,
                     params=CatBoostParams(iterations=iterations, seed=seed, max_rows_per_unit=rows_per_platform))
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

        report = evaluate(ReferenceDB(db), cfg, models or None, on_step, warn=lambda m: err.print(f"warning: {m}"))
        bar.update(task, completed=bar.tasks[0].total or 0, description="done")
    if plots:
        from hspi_onnx.learn.plots import write_plots

        report["plots"] = [str(p) for p in write_plots(report, plots)]
    if output:
        output.write_text(json.dumps(report, indent=1, sort_keys=True), "utf-8")
    if as_json:
        emit_json(report)
        return
    print_report(report)


def print_report(report: dict) -> None:
    from rich.table import Table

    from hspi_onnx.learn.results import losses, table_rows

    out = console()
    queries = sorted({r["n"] for r in report["records"]})
    table = Table("protocol", "target", *[f"n={n}" for n in queries], "ceiling", "groups",
                  title=f"accuracy, ours / svm-bits: {report['platforms']} platforms of "
                        f"{', '.join(report['models'])}; test probes {report['test_probes']}", show_lines=False)
    for row in table_rows(report):
        table.add_row(row["case"], row["target"], *row["cells"], row["ceiling"], row["groups"])
    out.print(table)
    lost = losses(report)
    out.print(f"ours loses to svm-bits in {len(lost)} of {len(table_rows(report)) * len(queries)} cells"
              + (": " + "; ".join(lost[:12]) + (" …" if len(lost) > 12 else "") if lost else ""), soft_wrap=True)
    unseen = [f"{r['protocol']}-{r['holdout']} {r['target']}: {', '.join(r['unseen_values'])}"
              for r in report["records"] if r["unseen_values"] and r["method"] == "catboost" and r["n"] == queries[0]]
    if unseen:
        out.print("not predictable (values the training side lacks): " + "; ".join(unseen), soft_wrap=True)
    out.print(f"{report['seconds']:.0f} s in all; plots: {len(report.get('plots', []))}")
