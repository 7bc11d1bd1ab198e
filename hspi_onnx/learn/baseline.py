"""The paper's HSPI-LD baseline (``--method svm-bits``): the IEEE-754 bits of the logits of n
queries concatenated -> StandardScaler -> one-vs-one LinearSVC.

The one-vs-one machines are fitted pair by pair here (the same model as scikit-learn's
``OneVsOneClassifier(LinearSVC())``) so that a trained baseline is nothing but arrays: it is
saved as ``.npz`` plus JSON, never pickled (:class:`SvmBitsBundle`, format ``hspi-svm-bits/1``).
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.safenpz import read_npz


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
) -> SvmBitsBundle:
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
    return SvmBitsBundle(models, str(examples.form), n_queries, len(groups))


# -- the saved bundle ------------------------------------------------------------------------------
SVM_BITS_FORMAT = "hspi-svm-bits/1"  # the classifier.json this version writes
META = "classifier.json"
MAX_META_BYTES = 1 << 24
_ARRAYS = {"mean", "scale", "pairs", "coef", "intercept"}


@dataclass
class SvmBitsBundle:
    """A trained svm-bits baseline as ``hspi train --method svm-bits`` saves it: one :class:`SvmBits`
    per target (its arrays in ``svm-bits-<target>.npz``) and what it was trained on, in
    ``classifier.json``. Nothing is pickled."""

    targets: dict[str, SvmBits]
    form: str  # the output form the rows were in
    n_queries: int  # queries concatenated per example
    examples: int  # training examples (groups of n_queries rows)
    db: str | None = None  # the reference DB trained on, and its digest (db.store.db_digest); absent if unset
    db_digest: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``classifier.json``: the settings and, per target, its array file and classes."""
        doc: dict[str, Any] = {
            "method": "svm-bits",
            "form": self.form,
            "n_queries": self.n_queries,
            "examples": self.examples,
        }
        doc |= {k: v for k, v in (("db", self.db), ("db_digest", self.db_digest)) if v is not None}
        targets = {name: {"file": _file_name(name), "classes": m.classes} for name, m in self.targets.items()}
        return doc | {"format": SVM_BITS_FORMAT, "targets": targets}

    def save(self, path: str | Path) -> Path:
        """Arrays in one ``.npz`` per target, classes and settings in ``classifier.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.targets.items():
            np.savez(
                path / _file_name(name),
                mean=model.mean,
                scale=model.scale,
                pairs=model.pairs,
                coef=model.coef,
                intercept=model.intercept,
            )
        (path / META).write_text(json.dumps(self.as_dict(), indent=1, sort_keys=True), "utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SvmBitsBundle:
        """A saved bundle of a format version this version reads, checked: the files are hostile
        input, and any problem is one HspiError line naming it."""
        path = Path(path)
        meta_path = path / META
        if not meta_path.is_file():
            raise HspiError(f"{str(path)!r} is not a classifier directory (no {META}); train one with `hspi train`")
        where = f"svm-bits classifier {str(path)!r}"
        try:
            if meta_path.stat().st_size > MAX_META_BYTES:
                raise HspiError(f"{where}: {META} is larger than {MAX_META_BYTES} bytes")
            doc = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise HspiError(f"{where}: {META} is unreadable ({type(exc).__name__})") from None
        found = doc.get("format") if isinstance(doc, dict) else None
        reader = _READERS.get(found) if isinstance(found, str) else None
        if reader is None:
            readable = ", ".join(_READERS)
            if isinstance(found, str) and found.startswith("hspi-svm-bits/"):
                raise HspiError(f"{where} is format {found}; this version reads {readable}")
            raise HspiError(
                f"{str(path)!r} is not an svm-bits classifier ({META} format {found!r}; this reads {readable})"
            )
        return reader(path, doc, where)


def _file_name(target: str) -> str:
    return "svm-bits-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in target) + ".npz"


def _read_v1(path: Path, doc: dict[str, Any], where: str) -> SvmBitsBundle:
    def text(key: str, optional: bool = False) -> str | None:
        value = doc.get(key)
        if optional and key not in doc:
            return None
        if not isinstance(value, str):
            raise HspiError(f"{where}: {META} {key!r} is not a string")
        return value

    def count(key: str, least: int) -> int:
        value = doc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise HspiError(f"{where}: {META} {key!r} is not an integer of at least {least}")
        return value

    if doc.get("method") != "svm-bits":
        raise HspiError(f"{where}: {META} 'method' is not 'svm-bits'")
    form, n_queries, examples = text("form") or "", count("n_queries", 1), count("examples", 0)
    entries = doc.get("targets")
    if not isinstance(entries, dict) or not entries:
        raise HspiError(f"{where}: {META} 'targets' is not an object naming at least one target")
    targets = {}
    for name, entry in entries.items():
        at = f"{where}: target {name[:40]!r}"
        file, classes = (entry.get("file"), entry.get("classes")) if isinstance(entry, dict) else (None, None)
        if not isinstance(file, str) or Path(file).name != file or not file.endswith(".npz"):
            raise HspiError(f"{at} names no .npz file in the classifier directory")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise HspiError(f"{at} has no list of two or more class names")
        arrays, _ = read_npz(path / file, _ARRAYS, f"svm-bits arrays of target {name[:40]!r}", meta_required=False)
        targets[name] = _checked(classes, n_queries, arrays, at)
    return SvmBitsBundle(targets, form, n_queries, examples, text("db", True), text("db_digest", True))


def _checked(classes: list[str], n_queries: int, a: dict[str, np.ndarray], at: str) -> SvmBits:
    """The one-vs-one machines of ``classes`` from arrays whose kinds and shapes agree."""
    k = len(classes)
    machines = k * (k - 1) // 2
    if a["mean"].ndim != 1:
        raise HspiError(f"{at}: array 'mean' is {a['mean'].dtype} {a['mean'].shape}, not a float vector")
    width = a["mean"].shape[0]
    want = {
        "mean": (width,),
        "scale": (width,),
        "pairs": (machines, 2),
        "coef": (machines, width),
        "intercept": (machines,),
    }
    for key, shape in want.items():
        kind = ("i", "an integer") if key == "pairs" else ("f", "a float")
        if a[key].dtype.kind != kind[0] or a[key].shape != shape:
            raise HspiError(f"{at}: array {key!r} is {a[key].dtype} {a[key].shape}, not {kind[1]} array {shape}")
    if width < 1 or a["pairs"].min() < 0 or a["pairs"].max() >= k:
        raise HspiError(f"{at}: its arrays are no one-vs-one machines over its {k} classes")
    return SvmBits(classes, n_queries, a["mean"], a["scale"], a["pairs"], a["coef"], a["intercept"])


_READERS = {SVM_BITS_FORMAT: _read_v1}  # format -> reader: an older format keeps its reader here
