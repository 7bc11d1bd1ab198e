"""``hspi eval``: honest held-out protocols, ours (CatBoost on features) side by side with the
paper's svm-bits baseline on exactly the same splits and query groups.

Protocols (docs/results.md):

split     random probe split: each model's probes are split; no probe has rows on both sides.
loro      leave one runtime out: train on the other runtimes, test on its held-out probes.
lomo      leave one model out (when the DB holds several models).
degraded  the random split with outputs degraded to one form (rounded, softmax, top-k, argmax)
          on both sides: a suspect file declares its form, so the classifier for that form is
          trained on the same degradation of the training probes.

A query group is n test rows of one (model, platform) unit; accuracy is over groups. Every
result carries the number of groups, the best accuracy any method can reach when platforms
are bit-identical (``ceiling``) and the majority-class rate (``majority``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from hspi_onnx.choices import EvalProtocol, Method
from hspi_onnx.forms import DEGRADED
from hspi_onnx.learn.baseline import fit_svm_bits, group_bits
from hspi_onnx.learn.classify import CatBoostParams, combine, fit_target, subsample
from hspi_onnx.learn.examples import PLATFORM, Examples, draw_groups
from hspi_onnx.learn.results import CaseTiming, EvalRecord, EvalReport

N_QUERIES = (1, 2, 4, 8, 16, 32)
METHODS = tuple(m.value for m in Method)
PROTOCOLS = tuple(p.value for p in EvalProtocol)


@dataclass
class EvalConfig:
    test_frac: float = 0.3
    seed: int = 0
    queries: tuple[int, ...] = N_QUERIES
    methods: tuple[str, ...] = METHODS
    targets: list[str] | None = None
    protocols: tuple[str, ...] = PROTOCOLS
    forms: tuple[str, ...] = DEGRADED
    max_groups_per_unit: int = 40
    svm_max_examples: int = 6000  # training examples of one svm-bits fit at n=1 ...
    svm_max_cells: float = 2.5e6  # ... fewer for longer inputs (bits x examples), but never below 1000
    params: CatBoostParams = field(default_factory=lambda: CatBoostParams(iterations=80, max_rows_per_unit=100))
    confusion_n: int = 8


@dataclass
class Case:
    protocol: str
    holdout: str  # held-out runtime/model, or "-"
    form: str
    train: np.ndarray  # row mask
    test: np.ndarray  # row mask
    skip_targets: tuple[str, ...] = ()


class CaseFields(TypedDict):
    """The fields of an EvalRecord shared by every method and query count of one case and target."""

    protocol: str
    holdout: str
    form: str
    target: str
    ceiling: float
    majority: float | None
    unseen_values: list[str]


def held_out_mask(ex: Examples, test_frac: float, seed: int) -> np.ndarray:
    """Rows whose probe is in the test split; probes are drawn per model, never per row."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(ex), dtype=bool)
    for model in sorted(set(ex.model.tolist())):
        rows = ex.model == model
        ids = np.unique(ex.probe[rows])
        k = max(1, int(round(len(ids) * test_frac)))
        test_ids = rng.choice(ids, size=min(k, len(ids) - 1), replace=False)
        mask |= rows & np.isin(ex.probe, test_ids)
    return mask


def ceiling(ex: Examples, mask: np.ndarray, y: np.ndarray) -> float:
    """Best accuracy any method can reach on the units in ``mask``: bit-identical platforms
    (one equivalence class) with different target values cannot be told apart."""
    units = np.unique(ex.unit[mask])
    first = {u: np.flatnonzero(ex.unit == u)[0] for u in units}
    by_class: dict[tuple, Counter] = {}
    for u, r in first.items():
        by_class.setdefault((ex.model[r], ex.klass[r]), Counter())[y[r]] += 1
    best = sum(max(c.values()) for c in by_class.values())
    return best / max(1, len(units))


def cases(ex: Examples, cfg: EvalConfig, test: np.ndarray | None = None) -> list[Case]:
    """Every case of ``cfg``; ``test``: the held-out rows (default: :func:`held_out_mask`)."""
    if test is None:
        test = held_out_mask(ex, cfg.test_frac, cfg.seed)
    out = []
    if "split" in cfg.protocols:
        out.append(Case("split", "-", "raw", ~test, test))
    rt = np.array([lab.split("@", 1)[0] for lab in ex.label.tolist()])
    if "loro" in cfg.protocols and len(set(rt.tolist())) > 1:
        for r in sorted(set(rt.tolist())):
            out.append(Case("loro", r, "raw", ~test & (rt != r), test & (rt == r), (PLATFORM, "runtime", "version")))
    models = sorted(set(ex.model.tolist()))
    if "lomo" in cfg.protocols and len(models) > 1:
        for m in models:
            out.append(Case("lomo", m, "raw", ~test & (ex.model != m), test & (ex.model == m), (PLATFORM,)))
    if "degraded" in cfg.protocols:
        out += [Case("degraded", "-", form, ~test, test) for form in cfg.forms]
    return out


def evaluate(
    db,
    cfg: EvalConfig,
    models: list[str] | None = None,
    on_step=lambda desc, total: None,
    warn=lambda msg: None,
    output: str | None = None,
) -> EvalReport:
    """Every case of ``cfg`` on ``db``: records, confusion matrices (ours, random split) and timing,
    on model output ``output`` (default: each model's first)."""
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.db.store import db_digest
    from hspi_onnx.learn.examples import build_examples, references

    t0 = time.perf_counter()
    groups = load_groups(db, models, output)
    manifest = db.manifest()
    refs = references(groups, manifest, warn)  # loaded once for every output form
    raw = build_examples(groups, "raw", manifest, refs=refs)
    test = held_out_mask(raw, cfg.test_frac, cfg.seed)
    all_cases = cases(raw, cfg, test)
    n_targets = len(raw.targets(cfg.targets))
    total = len(all_cases) * n_targets * len(cfg.methods)
    records, confusion, timing = [], {}, []
    for case in all_cases:
        ex = raw if case.form == "raw" else build_examples(groups, case.form, manifest, refs=refs)
        c0 = time.perf_counter()
        recs, conf = run_case(ex, case, cfg, on_step=lambda desc: on_step(desc, total))
        records += recs
        if case.protocol == "split":
            confusion = conf
        timing.append(CaseTiming(case.protocol, case.holdout, case.form, round(time.perf_counter() - c0, 1)))
    models_in = sorted(set(raw.model.tolist()))
    return EvalReport(
        db=str(db.root),
        db_digest=db_digest(db),
        output=output or "",
        models=models_in,
        platforms=len(set(raw.label.tolist())),
        rows=len(raw),
        test_probes={m: int(len(np.unique(raw.probe[test & (raw.model == m)]))) for m in models_in},
        train_probes={m: int(len(np.unique(raw.probe[~test & (raw.model == m)]))) for m in models_in},
        config={
            "test_frac": cfg.test_frac,
            "seed": cfg.seed,
            "queries": list(cfg.queries),
            "methods": list(cfg.methods),
            "protocols": list(cfg.protocols),
            "forms": list(cfg.forms),
            "max_groups_per_unit": cfg.max_groups_per_unit,
            "catboost": vars(cfg.params),
        },
        records=records,
        confusion=confusion,
        confusion_n=confusion_n(cfg),
        timing=timing,
        seconds=round(time.perf_counter() - t0, 1),
    )


def run_case(ex: Examples, case: Case, cfg: EvalConfig, on_step=lambda desc: None) -> tuple[list[EvalRecord], dict]:
    """Records for every target, method and n of one case; confusion counts of ours at confusion_n."""
    records, confusion = [], {}
    targets = {t: y for t, y in ex.targets(cfg.targets).items() if t not in case.skip_targets}
    test_groups = {n: draw_groups(ex, case.test, n, cfg.max_groups_per_unit, cfg.seed) for n in cfg.queries}
    for t, y in targets.items():
        train_rows = np.flatnonzero(case.train)
        seen = set(y[train_rows].tolist())
        if len(seen) < 2:
            continue
        counts = Counter(y[np.flatnonzero(case.test)].tolist())
        base: CaseFields = {
            "protocol": case.protocol,
            "holdout": case.holdout,
            "form": case.form,
            "target": t,
            "ceiling": round(ceiling(ex, case.test, y), 4),
            "majority": round(max(counts.values()) / sum(counts.values()), 4) if counts else None,
            "unseen_values": sorted(set(y[case.test].tolist()) - seen),
        }
        for method in cfg.methods:
            on_step(f"{case.protocol} {case.holdout if case.holdout != '-' else case.form} {t} {method}")
            t0 = time.perf_counter()
            if method == "catboost":
                preds, classes = _ours(ex, case, y, t, cfg, test_groups)
            else:
                preds, classes = _svm(ex, case, y, cfg, test_groups)
            seconds = time.perf_counter() - t0
            for n, groups in test_groups.items():
                truth = np.array([y[g[0]] for g in groups], dtype=object)
                ok = np.array([v in seen for v in truth], dtype=bool)
                pred = np.array([classes[i] for i in preds[n]], dtype=object) if len(groups) else truth
                acc = float((pred[ok] == truth[ok]).mean()) if ok.any() else None
                records.append(
                    EvalRecord(
                        **base,
                        method=method,
                        n=n,
                        accuracy=None if acc is None else round(acc, 4),
                        groups=int(ok.sum()),
                        unpredictable_groups=int((~ok).sum()),
                        train_seconds=round(seconds, 2),
                    )
                )
                if method == "catboost" and n == confusion_n(cfg) and ok.any():
                    confusion[t] = _confusion(truth[ok], pred[ok])
    return records, confusion


def confusion_n(cfg: EvalConfig) -> int:
    """The query count confusion matrices are drawn at: confusion_n, or the largest n run."""
    return cfg.confusion_n if cfg.confusion_n in cfg.queries else max(cfg.queries)


def _ours(ex, case, y, t, cfg, test_groups):
    keep = subsample(np.where(case.train, ex.unit, -1), cfg.params.max_rows_per_unit, cfg.params.seed)
    keep = keep[case.train[keep]]
    model = fit_target(t, ex.X[keep], y[keep], cfg.params)
    test_rows = np.flatnonzero(case.test)
    lp = np.zeros((len(ex), len(model.classes)))
    lp[test_rows] = model.log_proba(ex.X[test_rows])
    return {n: combine(lp, g) for n, g in test_groups.items()}, model.classes


def _svm(ex, case, y, cfg, test_groups):
    preds, classes = {}, None
    for n, groups in test_groups.items():
        cap = max(1000, min(cfg.svm_max_examples, int(cfg.svm_max_cells // (ex.bits.shape[1] * n))))
        train_groups = draw_groups(ex, case.train, n, cfg.max_groups_per_unit, cfg.seed + 1)
        if len(train_groups) > cap:
            pick = np.random.default_rng(cfg.seed).choice(len(train_groups), cap, replace=False)
            train_groups = [train_groups[i] for i in sorted(pick)]
        Xtr = group_bits(ex.bits, train_groups)
        ytr = np.array([y[g[0]] for g in train_groups], dtype=object)
        model = fit_svm_bits(Xtr, ytr, n, cfg.seed)
        classes = model.classes if classes is None else classes
        if model.classes != classes:  # every n sees the same training units, so the same classes
            raise RuntimeError("svm-bits classes differ between query counts")
        preds[n] = model.predict(group_bits(ex.bits, groups)) if groups else np.zeros(0, int)
    return preds, classes


def _confusion(truth: np.ndarray, pred: np.ndarray) -> dict:
    labels = sorted(set(truth.tolist()) | set(pred.tolist()))
    index = {v: i for i, v in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for a, b in zip(truth, pred):
        m[index[a], index[b]] += 1
    return {"labels": labels, "matrix": m.tolist()}
