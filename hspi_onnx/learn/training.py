"""``hspi train`` as a library call: features of a DB's outputs, one classifier per target (ours,
CatBoost, or the paper's svm-bits baseline), saved with what it was trained on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hspi_onnx.choices import Method


def fit_and_save(
    db,
    output: Path,
    form: str = "raw",
    method: str = Method.CATBOOST,
    *,
    queries: int = 8,
    models: list[str] | None = None,
    targets: list[str] | None = None,
    output_name: str | None = None,
    iterations: int = 150,
    rows_per_platform: int = 250,
    seed: int = 0,
    on_stage: Callable[[str, int], None] = lambda name, total: None,
    on_step: Callable[[], None] = lambda: None,
    warn: Callable[[str], None] = lambda m: None,
) -> dict:
    """Train on every probe of ``db`` (a :class:`~hspi_onnx.db.store.ReferenceDB`) and save to
    ``output``: CatBoost's native format or the svm-bits bundle, JSON metadata, no pickle.
    ``on_stage(name, total)`` starts a stage ("features": outputs to read, "training": targets),
    ``on_step()`` marks one done. Returns the report ``hspi train --json`` prints."""
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.db.store import db_digest
    from hspi_onnx.learn.classify import CatBoostParams, train
    from hspi_onnx.learn.examples import build_examples

    method = Method(method)
    t0 = time.perf_counter()
    groups = load_groups(db, models or None, output_name)
    on_stage(f"features ({form})", sum(len(g.outputs) for g in groups))
    ex = build_examples(groups, form, db.manifest(), warn=warn, on_platform=on_step)
    t_features = time.perf_counter() - t0
    on_stage("training", len(list(ex.targets(targets or None))))
    timings: dict[str, float] = {}

    def done(name: str, seconds: float) -> None:
        timings[name] = round(seconds, 2)
        on_step()

    if method is Method.CATBOOST:
        params = CatBoostParams(iterations=iterations, seed=seed, max_rows_per_unit=rows_per_platform)
        clf = train(ex, targets or None, params, on_target=done)
        clf.meta |= {
            "db": str(db.root),
            "db_digest": db_digest(db),
            "probes": int(len(set(zip(ex.model, ex.probe)))),
            "method": str(method),
            "params": vars(params),
            "output": output_name,
        }
        clf.save(output)
        classes = {t: len(m.classes) for t, m in clf.targets.items()}
    else:
        from hspi_onnx.learn.baseline import train_svm_bits

        bundle = train_svm_bits(ex, targets or None, queries, seed, on_target=done)
        bundle.db, bundle.db_digest = str(db.root), db_digest(db)
        bundle.save(output)
        classes = {t: len(m.classes) for t, m in bundle.targets.items()}
    seconds = time.perf_counter() - t0
    return {
        "output": str(output),
        "method": str(method),
        "form": form,
        "rows": len(ex),
        "platforms": len(set(ex.label.tolist())),
        "targets": classes,
        "train_seconds": timings,
        "feature_seconds": round(t_features, 2),
        "seconds": round(seconds, 2),
    }
