"""The classifier: one CatBoost multiclass model per target, trained on one feature row per
query, combining n queries by summing log-probabilities (queries are independent draws).

Saved as a directory: ``<target>.cbm`` in CatBoost's native format and ``classifier.json``
(format, output form, feature names, label map per target, DB digest, rows, probes). No
pickle anywhere.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.learn.features import NAMES, STORAGE_FEATURES

STORAGE_COLUMNS = [NAMES.index(f) for f in STORAGE_FEATURES]

FORMAT = "hspi-classifier/2"  # /2: a temperature per query count
META = "classifier.json"
EPS = 1e-6


@dataclass
class CatBoostParams:
    iterations: int = 150
    depth: int = 6
    learning_rate: float = 0.3
    threads: int = -1
    seed: int = 0
    max_rows_per_unit: int = 250  # training rows per (model, platform); more adds time, not accuracy
    mask_fraction: float = 0.5  # rows copied with storage features hidden (see mask_storage)


def subsample(units: np.ndarray, per_unit: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``per_unit`` rows of each unit, chosen at random."""
    rng = np.random.default_rng(seed)
    keep = []
    for u in np.unique(units):
        idx = np.flatnonzero(units == u)
        keep.append(idx if len(idx) <= per_unit else rng.choice(idx, per_unit, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)


class ClassModel(Protocol):
    """What a target needs of its fitted model (a catboost.CatBoostClassifier)."""

    classes_: Any  # the class labels, in predict_proba's column order

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def save_model(self, fname: str, format: str) -> None: ...


@dataclass
class TargetModel:
    name: str
    classes: list[str]
    model: ClassModel  # catboost.CatBoostClassifier
    # query count -> divisor of the summed log-probabilities of that many queries (fit_temperatures);
    # empty: not calibrated, queries summed as independent draws
    temperatures: dict[int, float] = field(default_factory=dict)

    def temperature(self, n: int) -> float:
        """The divisor for ``n`` queries: fitted at the calibrated counts, interpolated in
        log n between them, and beyond the largest growing with n (further queries are taken
        to add no confidence: the conservative assumption when they were never measured)."""
        if not self.temperatures:
            return 1.0
        ns = sorted(self.temperatures)
        if n <= ns[0]:
            return self.temperatures[ns[0]]
        if n >= ns[-1]:
            return self.temperatures[ns[-1]] * n / ns[-1]
        hi = next(k for k in ns if k >= n)
        lo = max(k for k in ns if k <= n)
        if hi == lo:
            return self.temperatures[lo]
        w = (np.log(n) - np.log(lo)) / (np.log(hi) - np.log(lo))
        return float(np.exp((1 - w) * np.log(self.temperatures[lo]) + w * np.log(self.temperatures[hi])))

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """(rows, classes) log-probabilities, columns in ``classes`` order."""
        p = self.model.predict_proba(X)
        order = [list(map(str, self.model.classes_)).index(str(i)) for i in range(len(self.classes))]
        return np.log(np.clip(p[:, order], EPS, 1.0))


def mask_storage(X: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows plus a copy of a random ``fraction`` of them with the storage features
    (those that show the dtype of the last operation: width, trailing zeros, low bits, ties,
    gaps, grid) set to NaN. A runtime that computes in binary16 but returns binary32 (ONNX
    Runtime's fp16 models cast their outputs back) then still looks like binary16 through its
    error against the reference, instead of through bits another runtime's fp16 never shows."""
    if fraction <= 0:
        return X, y
    rng = np.random.default_rng(seed)
    pick = rng.random(len(X)) < fraction
    Xm = X[pick].copy()
    Xm[:, STORAGE_COLUMNS] = np.nan
    return np.concatenate([X, Xm]), np.concatenate([y, y[pick]])


def fit_target(name: str, X: np.ndarray, y: np.ndarray, params: CatBoostParams) -> TargetModel:
    from catboost import CatBoostClassifier

    X, y = mask_storage(X, y, params.mask_fraction, params.seed)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise HspiError(f"target {name!r} takes one value only in the training data")
    index = {c: i for i, c in enumerate(classes)}
    yi = np.array([index[v] for v in y])
    model = CatBoostClassifier(
        loss_function="MultiClass",
        iterations=params.iterations,
        depth=params.depth,
        learning_rate=params.learning_rate,
        thread_count=params.threads,
        random_seed=params.seed,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(X, yi)
    return TargetModel(name, classes, model)


def combine(log_proba: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Predicted class index of each group of rows (sum of log-probabilities)."""
    return np.array([int(np.argmax(log_proba[g].sum(axis=0))) for g in groups], dtype=int)


@dataclass
class Classifier:
    form: str
    targets: dict[str, TargetModel]
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, tm in self.targets.items():
            fname = f"{_safe(name)}.cbm"
            tm.model.save_model(str(path / fname), format="cbm")
            files[name] = {
                "file": fname,
                "classes": tm.classes,
                "temperatures": {str(n): t for n, t in sorted(tm.temperatures.items())},
            }
        meta = {**self.meta, "format": FORMAT, "form": self.form, "features": list(NAMES), "targets": files}
        (path / META).write_text(json.dumps(meta, indent=1, sort_keys=True), "utf-8")
        return path

    def posterior(self, X: np.ndarray) -> dict[str, dict[str, float]]:
        """target -> {value: calibrated probability} for the n queries in ``X`` together."""
        out = {}
        for name, tm in self.targets.items():
            z = tm.log_proba(X).sum(axis=0) / tm.temperature(len(X))
            p = np.exp(z - z.max())
            p /= p.sum()
            out[name] = {c: float(v) for c, v in zip(tm.classes, p)}
        return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def load_classifier(path: str | Path) -> Classifier:
    from catboost import CatBoostClassifier

    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise HspiError(f"{str(path)!r} is not a classifier directory (no {META}); train one with `hspi train`")
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HspiError(f"classifier metadata {str(meta_path)!r} is unreadable ({type(exc).__name__})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HspiError(f"{str(meta_path)!r} is not a {FORMAT} classifier")
    if meta.get("features") != list(NAMES):
        raise HspiError("the classifier was trained on other features than this version computes; retrain it")
    targets = {}
    for name, entry in meta["targets"].items():
        f = path / str(entry["file"])
        if f.parent != path or not f.is_file():
            raise HspiError(f"classifier file for target {name!r} is missing")
        model = CatBoostClassifier()
        try:
            model.load_model(str(f), format="cbm")
        except Exception as exc:  # CatBoost raises its own error type on a corrupt file
            raise HspiError(f"classifier file {str(f)!r} is corrupt ({type(exc).__name__})")
        try:
            temps = {int(n): float(t) for n, t in dict(entry["temperatures"]).items()}
        except (KeyError, TypeError, ValueError):
            raise HspiError(f"classifier metadata of target {name!r} has malformed temperatures")
        if any(n < 1 or not np.isfinite(t) or t < 1.0 for n, t in temps.items()):
            raise HspiError(f"classifier metadata of target {name!r} has malformed temperatures")
        targets[name] = TargetModel(name, [str(c) for c in entry["classes"]], model, temps)
    return Classifier(str(meta["form"]), targets, meta)


TEMPERATURES = np.geomspace(1.0, 1024.0, 41)
CALIBRATION_QUERIES = (1, 2, 4, 8, 16, 32)


def _best_temperature(S: np.ndarray, y: np.ndarray) -> float:
    best, best_t = np.inf, 1.0
    for t in TEMPERATURES:
        z = S / t
        z = z - z.max(axis=1, keepdims=True)
        nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean()
        if nll < best - 1e-9:
            best, best_t = nll, float(t)
    return best_t


def fit_temperatures(log_proba: np.ndarray, truth: np.ndarray, units: np.ndarray, seed: int) -> dict[int, float]:
    """For each n of CALIBRATION_QUERIES that the held-out rows fill, the T minimising the
    log-loss of softmax(sum of n log-probabilities / T) over groups of n held-out queries of
    one unit. n queries of one platform are not independent draws (a platform the features
    confuse is confused on every query), so plain summing overstates confidence, the more so
    the larger n: one T for every n would be fitted to the many small groups and leave large
    groups overconfident. T >= 1 only ever tempers, and T does not fall as n grows."""
    rng = np.random.default_rng(seed)
    out: dict[int, float] = {}
    for n in CALIBRATION_QUERIES:
        sums, labels = [], []
        for u in np.unique(units):
            rows = rng.permutation(np.flatnonzero(units == u))
            for k in range(len(rows) // n):
                g = rows[k * n : (k + 1) * n]
                sums.append(log_proba[g].sum(axis=0))
                labels.append(truth[g[0]])
        if not sums:
            break
        out[n] = max(_best_temperature(np.array(sums), np.array(labels)), max(out.values(), default=1.0))
    return out


def calibration_mask(examples, fraction: float, seed: int) -> np.ndarray:
    """Rows whose probe is held out for calibration (by probe, per model, like every split)."""
    rng = np.random.default_rng(seed + 1)
    mask = np.zeros(len(examples), dtype=bool)
    for model in sorted(set(examples.model.tolist())):
        rows = examples.model == model
        ids = np.unique(examples.probe[rows])
        k = min(len(ids) - 1, max(1, int(round(len(ids) * fraction))))
        if k >= 1:
            mask |= rows & np.isin(examples.probe, rng.choice(ids, size=k, replace=False))
    return mask


def train(
    examples,
    target_names: list[str] | None,
    params: CatBoostParams,
    on_target=lambda name, seconds: None,
    calibrate: float = 0.2,
) -> Classifier:
    """One CatBoost model per target on (a per-unit subsample of) ``examples``; a ``calibrate``
    fraction of the probes is held out to fit each target's temperature."""
    held = calibration_mask(examples, calibrate, params.seed) if calibrate > 0 else np.zeros(len(examples), bool)
    fit_rows = np.flatnonzero(~held)
    keep = fit_rows[subsample(examples.unit[fit_rows], params.max_rows_per_unit, params.seed)]
    ex = examples.subset(keep)
    cal_rows = np.flatnonzero(held)
    cal = examples.subset(cal_rows[subsample(examples.unit[cal_rows], 64, params.seed)])
    cal_targets = cal.targets(target_names)
    models = {}
    for name, y in ex.targets(target_names).items():
        t0 = time.perf_counter()
        tm = fit_target(name, ex.X, y, params)
        if len(cal):
            index = {c: i for i, c in enumerate(tm.classes)}
            known = np.array([v in index for v in cal_targets[name]])
            if known.any():
                truth = np.array([index.get(v, 0) for v in cal_targets[name]])
                tm.temperatures = fit_temperatures(
                    tm.log_proba(cal.X[known]), truth[known], cal.unit[known], params.seed
                )
        models[name] = tm
        on_target(name, time.perf_counter() - t0)
    meta = {
        "rows": int(len(ex)),
        "calibration_rows": int(len(cal)),
        "platforms": sorted(set(ex.label.tolist())),
        "models": sorted(set(ex.model.tolist())),
    }
    return Classifier(examples.form, models, meta)
