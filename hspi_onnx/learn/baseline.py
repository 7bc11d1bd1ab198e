"""The paper's HSPI-LD baseline (``--method svm-bits``): the IEEE-754 bits of the logits of n
queries concatenated -> StandardScaler -> one-vs-one LinearSVC.

The one-vs-one machines are fitted pair by pair here (the same model as scikit-learn's
``OneVsOneClassifier(LinearSVC())``) so that a trained baseline is nothing but arrays: it is
saved as ``.npz`` plus JSON, never pickled.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from hspi_onnx.errors import HspiError


@dataclass
class SvmBits:
    classes: list[str]
    n_queries: int
    mean: np.ndarray  # scaler
    scale: np.ndarray
    pairs: np.ndarray  # (P, 2) class indices
    coef: np.ndarray  # (P, features)
    intercept: np.ndarray  # (P,)

    def decision(self, X: np.ndarray) -> np.ndarray:
        """(rows, classes) votes plus a confidence tie-break below one vote, as scikit-learn does."""
        Z = (X.astype(np.float32) - self.mean) / self.scale
        d = Z @ self.coef.T + self.intercept
        k = len(self.classes)
        votes = np.zeros((len(X), k))
        conf = np.zeros((len(X), k))
        for p, (i, j) in enumerate(self.pairs):
            pos = d[:, p] > 0
            votes[:, j] += pos
            votes[:, i] += ~pos
            conf[:, j] += d[:, p]
            conf[:, i] -= d[:, p]
        return votes + conf / (3 * (np.abs(conf) + 1))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision(X), axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "pairs": self.pairs,
            "coef": self.coef,
            "intercept": self.intercept,
        }


def fit_svm_bits(X: np.ndarray, y: np.ndarray, n_queries: int, seed: int = 0, C: float = 1.0) -> SvmBits:
    """Fit on rows of concatenated bits ``X`` (rows, 32 * values * n_queries) with labels ``y``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise HspiError("svm-bits needs at least two classes in the training data")
    index = {c: i for i, c in enumerate(classes)}
    yi = np.array([index[v] for v in y])
    Xf = X.astype(np.float32)
    mean = Xf.mean(axis=0)
    scale = Xf.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (Xf - mean) / scale
    pairs, coefs, icepts = [], [], []
    for i, j in itertools.combinations(range(len(classes)), 2):
        rows = (yi == i) | (yi == j)
        svc = LinearSVC(C=C, dual="auto", max_iter=200, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svc.fit(Z[rows], (yi[rows] == j).astype(int))
        pairs.append((i, j))
        coefs.append(svc.coef_[0].astype(np.float32))
        icepts.append(float(svc.intercept_[0]))
    return SvmBits(
        classes,
        n_queries,
        mean,
        scale,
        np.array(pairs, dtype=np.int64),
        np.stack(coefs),
        np.array(icepts, dtype=np.float32),
    )


def group_bits(bits: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Concatenate the bit rows of each group of queries (one example per group)."""
    return np.stack([bits[g].reshape(-1) for g in groups]) if groups else np.zeros((0, 0), np.uint8)


def train_svm_bits(
    examples,
    target_names,
    n_queries: int,
    seed: int = 0,
    max_examples: int = 6000,
    on_target=lambda name, seconds: None,
) -> dict:
    """The baseline fitted per target on groups of ``n_queries`` rows of ``examples``."""
    import time

    from hspi_onnx.learn.examples import draw_groups

    groups = draw_groups(examples, np.ones(len(examples), dtype=bool), n_queries, 40, seed)
    if len(groups) > max_examples:
        pick = np.random.default_rng(seed).choice(len(groups), max_examples, replace=False)
        groups = [groups[i] for i in sorted(pick)]
    X = group_bits(examples.bits, groups)
    models = {}
    for name, y in examples.targets(target_names).items():
        t0 = time.perf_counter()
        models[name] = fit_svm_bits(X, np.array([y[g[0]] for g in groups], dtype=object), n_queries, seed)
        on_target(name, time.perf_counter() - t0)
    return {
        "targets": models,
        "meta": {"method": "svm-bits", "form": examples.form, "n_queries": n_queries, "examples": len(groups)},
    }


def save_svm_bits(bundle: dict, path) -> None:
    """Arrays in one ``.npz`` per target, classes and settings in ``classifier.json``."""
    import json
    from pathlib import Path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, model in bundle["targets"].items():
        fname = "svm-bits-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name) + ".npz"
        np.savez(path / fname, **model.arrays())
        entries[name] = {"file": fname, "classes": model.classes}
    meta = {**bundle["meta"], "format": "hspi-svm-bits/1", "targets": entries}
    (path / "classifier.json").write_text(json.dumps(meta, indent=1, sort_keys=True), "utf-8")
