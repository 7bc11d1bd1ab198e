"""Calibrated estimates of an LLM stack's weight bits, compute precision and KV-cache precision
from its answers, for stacks the DB does not hold (issue 29).

Training data: every DB platform's answer to every chat, as :func:`request_features` against the
reference stack teacher-forced on the same tokens, labelled by :func:`llm_attributes`. One
multinomial logistic regression per attribute on standardized features; n requests are combined
by averaging their feature vectors (one prediction on the average). Probabilities are calibrated
for stacks outside the DB: every stack (a runtime, precision and quantization recipe, all its
variants together) is left out in turn, its answers predicted by a model trained on the others,
and one temperature per attribute is fitted on those out-of-stack predictions (log loss).

The estimator is JSON (format :data:`ESTIMATOR_FORMAT`): the scaler, coefficients, classes,
temperatures, each training platform's mean standardized features (for the nearest DB platform)
and what it was trained on. Read back with bounded size and strict checks, like every file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.labels import Platform
from hspi_onnx.learn.llm_attributes import ATTRIBUTES, llm_attributes
from hspi_onnx.learn.llm_evidence import FEATURES

GRID_SURE = 0.9  # a half-precision grid at this share of positions decides the compute dtype

ESTIMATOR_FORMAT = "hspi-llm-estimator/1"
MAX_BYTES = 8 << 20
TOP_K = 5  # alternatives per position the features use: what an OpenAI-compatible server returns
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))


class BadEstimatorError(HspiError):
    pass


def stack_of(label: str) -> str:
    """What leaves the training data together: runtime, precision and quantization recipe."""
    p = Platform.parse(label)
    return f"{p.runtime}/{p.precision}/{p.knob.get('quant', '-')}"


@dataclass
class AttributeModel:
    classes: list[str]
    coef: np.ndarray  # (classes, features), on standardized features
    intercept: np.ndarray  # (classes,)
    temperature: float = 1.0

    def log_proba(self, z: np.ndarray) -> np.ndarray:
        """Log-probabilities (n, classes) of standardized feature rows ``z`` (n, features)."""
        return log_softmax((z @ self.coef.T + self.intercept) / self.temperature)


def log_softmax(s: np.ndarray) -> np.ndarray:
    """Log-probabilities of scores ``s`` along the last axis."""
    s = s - s.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


@dataclass
class LlmEstimator:
    model_sha256: str
    reference: str  # the reference platform's label
    mean: np.ndarray
    scale: np.ndarray
    attributes: dict[str, AttributeModel]
    platforms: dict[str, np.ndarray] = field(default_factory=dict)  # label -> mean standardized features
    trained_on: dict = field(default_factory=dict)
    gguf_weights: dict[str, str] = field(default_factory=dict)  # GGUF type -> weight class of the model's files
    features: tuple[str, ...] = FEATURES
    top_k: int = TOP_K

    def standardize(self, x: np.ndarray) -> np.ndarray:
        return (np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0) - self.mean) / self.scale

    def estimate(self, x: np.ndarray) -> dict:
        """Estimates from the features ``x`` (requests, features) of one suspect's answers: per
        attribute the classes with probabilities (most likely first), and the DB platforms whose
        answers are nearest (mean standardized features, Euclidean)."""
        rows = np.asarray(x, dtype=np.float64)
        rows = rows[~np.isnan(rows).all(axis=1)]
        if not len(rows):
            raise HspiError("no answer has a position the reference can be compared at: nothing to estimate from")
        mean = np.nan_to_num(rows, nan=0.0).mean(axis=0)
        z = self.standardize(mean[None, :])
        out: dict = {"requests": len(rows), "attributes": {}}
        for name, m in self.attributes.items():
            p = np.exp(m.log_proba(z)[0])
            probs = {m.classes[i]: float(p[i]) for i in range(len(p))}
            if name == "compute":
                probs = grid_rule(probs, mean)
            out["attributes"][name] = {c: round(v, 4) for c, v in sorted(probs.items(), key=lambda kv: -kv[1])}
        out["logits"] = {k: round(float(mean[FEATURES.index(f)]), 4) for k, f in LOGITS_GRID.items()}
        out["gguf_weights"] = dict(self.gguf_weights)
        dist = sorted((float(np.linalg.norm(z[0] - v)), label) for label, v in self.platforms.items())
        out["nearest"] = [{"platform": label, "distance": round(d, 3)} for d, label in dist[:3]]
        return out

    def as_dict(self) -> dict:
        return {
            "format": ESTIMATOR_FORMAT,
            "model_sha256": self.model_sha256,
            "reference": self.reference,
            "features": list(self.features),
            "top_k": self.top_k,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "attributes": {
                name: {
                    "classes": m.classes,
                    "coef": m.coef.tolist(),
                    "intercept": m.intercept.tolist(),
                    "temperature": m.temperature,
                }
                for name, m in self.attributes.items()
            },
            "platforms": {label: v.tolist() for label, v in self.platforms.items()},
            "trained_on": self.trained_on,
            "gguf_weights": self.gguf_weights,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1))
        tmp.replace(path)
        return path


LOGITS_GRID = {"bf16": "grid_bf16_frac", "fp16": "grid_fp16_frac"}


def grid_rule(probs: dict[str, float], mean: np.ndarray) -> dict[str, float]:
    """The compute dtype where the printed log-probabilities show a half-precision grid at
    :data:`GRID_SURE` of the positions (``mean``: the requests' mean raw features): logits kept
    in bf16 or fp16 were computed in it. That dtype gets the grid's share, the other classes the
    rest in their learned proportions. A rule, not learned: a DB rarely holds more than one stack
    whose logits are bf16, so leaving it out would leave no example."""
    for dtype, feature in LOGITS_GRID.items():
        share = float(mean[FEATURES.index(feature)])
        if share >= GRID_SURE:
            rest = sum(v for c, v in probs.items() if c != dtype)
            out = {c: (1 - share) * v / rest if rest > 0 else 0.0 for c, v in probs.items() if c != dtype}
            return {dtype: share, **out}
    return probs


def load_estimator(path: str | Path) -> LlmEstimator:
    """An estimator file, read with a size bound and checked field by field."""
    path = Path(path)

    def bad(why: str) -> BadEstimatorError:
        return BadEstimatorError(f"estimator {str(path)!r}: {why}")

    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise bad(f"larger than {MAX_BYTES >> 20} MiB")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != ESTIMATOR_FORMAT:
        raise bad(f"not an {ESTIMATOR_FORMAT} file")
    if doc.get("features") != list(FEATURES):
        raise bad("made with other features than this version computes: train it again (hspi db estimator)")
    nf = len(FEATURES)

    def vector(v, n: int, what: str) -> np.ndarray:
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad(f"{what} is not numeric") from None
        if a.shape != (n,) or not np.isfinite(a).all():
            raise bad(f"{what} is not {n} finite numbers")
        return a

    mean, scale = vector(doc.get("mean"), nf, "mean"), vector(doc.get("scale"), nf, "scale")
    if (scale <= 0).any():
        raise bad("scale is not positive")
    attrs = {}
    raw_attrs = doc.get("attributes")
    if not isinstance(raw_attrs, dict) or set(raw_attrs) - set(ATTRIBUTES) or not raw_attrs:
        raise bad(f"attributes must be some of {', '.join(ATTRIBUTES)}")
    for name, m in raw_attrs.items():
        classes = m.get("classes") if isinstance(m, dict) else None
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise bad(f"{name}: classes must be two or more names")
        coef = np.stack([vector(r, nf, f"{name} coefficients") for r in _rows(m.get("coef"), len(classes), bad)])
        intercept = vector(m.get("intercept"), len(classes), f"{name} intercept")
        t = m.get("temperature")
        if not isinstance(t, (int, float)) or not 0 < t < 1e6:
            raise bad(f"{name}: temperature must be a positive number")
        attrs[name] = AttributeModel(classes, coef, intercept, float(t))
    platforms = doc.get("platforms", {})
    if not isinstance(platforms, dict):
        raise bad("platforms must be an object")
    nearest = {str(k): vector(v, nf, "a platform's features") for k, v in platforms.items()}
    sha, ref = doc.get("model_sha256"), doc.get("reference")
    if not isinstance(sha, str) or not isinstance(ref, str):
        raise bad("model_sha256 and reference must be strings")
    trained = doc.get("trained_on", {})
    top_k = doc.get("top_k")
    if not isinstance(top_k, int) or not 2 <= top_k <= 20:
        raise bad("top_k must be 2..20")
    return LlmEstimator(
        sha, ref, mean, scale, attrs, nearest, trained if isinstance(trained, dict) else {}, top_k=top_k
    )


def _rows(v, n: int, bad) -> list:
    if not isinstance(v, list) or len(v) != n:
        raise bad(f"coefficients must be {n} rows")
    return v


def _fit_attribute(x: np.ndarray, y: np.ndarray) -> AttributeModel:
    """Multinomial logistic regression on standardized rows ``x``."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=5000, C=10.0)
    clf.fit(x, y)
    classes = [str(c) for c in clf.classes_]
    coef, intercept = clf.coef_, clf.intercept_
    if len(classes) == 2:  # sklearn's binary form: one row for the second class
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return AttributeModel(classes, np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64))


def feature_scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def attribute_table(labels: list[str], gguf_weights: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """attribute -> each label's class."""
    attrs = [llm_attributes(lab, gguf_weights) for lab in labels]
    if any(a is None for a in attrs):
        raise HspiError("every training platform must be an LLM runtime with known attributes")
    return {name: np.array([a[name] for a in attrs if a is not None]) for name in ATTRIBUTES}


def subsets(n_requests: int, n: int, draws: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``draws`` random sets of ``n`` of the ``n_requests`` requests (all of them once, if n is all)."""
    if n >= n_requests:
        yield np.arange(n_requests)
        return
    for _ in range(draws):
        yield rng.choice(n_requests, size=n, replace=False)


def leave_one_stack_out(
    x: np.ndarray,
    labels: list[str],
    ns: list[int],
    draws: int = 8,
    seed: int = 0,
    gguf_weights: dict[str, str] | None = None,
    folds: int = 2,
) -> list[dict]:
    """Out-of-stack predictions, split by stack and by chat: the chats fall in ``folds`` folds
    (every ``folds``-th chat); for every stack and fold, a model trained on the other stacks'
    answers to the other folds' chats predicts each attribute of the stack's platforms from ``n``
    of their answers to the fold's chats (``draws`` random sets for each n in ``ns`` no larger
    than a fold, the same sets for every attribute). One record per (platform, attribute, n,
    draw) with the true class and the raw (uncalibrated) scores of every class. With one chat
    there is no chat split."""
    rng = np.random.default_rng(seed)
    y = attribute_table(labels, gguf_weights)
    stacks = [stack_of(lab) for lab in labels]
    n_req = x.shape[1]
    folds = max(1, min(folds, n_req))
    out = []
    for fold in range(folds):
        test_chats = np.arange(fold, n_req, folds)
        train_chats = np.setdiff1d(np.arange(n_req), test_chats) if folds > 1 else test_chats
        sizes = [n for n in ns if n <= len(test_chats)]
        for held in sorted(set(stacks)):
            test = [i for i, s in enumerate(stacks) if s == held]
            train = [i for i, s in enumerate(stacks) if s != held]
            flat = np.nan_to_num(x[train][:, train_chats].reshape(-1, x.shape[2]), nan=0.0)
            mean, scale = feature_scaler(flat)
            picks = {
                (i, n): [test_chats[p] for p in subsets(len(test_chats), n, draws, rng)] for i in test for n in sizes
            }
            for name in ATTRIBUTES:
                ys = np.repeat(y[name][train], len(train_chats))
                if len(set(ys)) < 2:
                    continue
                m = _fit_attribute((flat - mean) / scale, ys)
                for i in test:
                    for n in sizes:
                        for draw, pick in enumerate(picks[(i, n)]):
                            raw = np.nan_to_num(x[i, pick], nan=0.0).mean(axis=0, keepdims=True)
                            z = (raw - mean) / scale
                            out.append(
                                {
                                    "platform": labels[i],
                                    "stack": held,
                                    "fold": fold,
                                    "attribute": name,
                                    "n": n,
                                    "draw": draw,
                                    "requests": pick,
                                    "truth": str(y[name][i]),
                                    "classes": m.classes,
                                    "scores": (z @ m.coef.T + m.intercept)[0],
                                    "mean": raw[0],
                                }
                            )
    return out


def fit_temperature(records: list[dict]) -> float:
    """The temperature that minimizes the log loss of out-of-stack predictions (a truth the
    training classes lack counts as the least likely class)."""
    best, best_t = np.inf, 1.0
    for t in TEMPERATURES:
        loss = 0.0
        for r in records:
            logp = log_softmax(r["scores"] / t)
            loss -= logp[r["classes"].index(r["truth"])] if r["truth"] in r["classes"] else logp.min()
        if loss < best:
            best, best_t = loss, float(t)
    return best_t


def calibrated(record: dict, temperature: float) -> dict[str, float]:
    """A leave-one-stack-out record's class probabilities at ``temperature``, with the grid rule
    for the compute dtype (as :meth:`LlmEstimator.estimate` gives them)."""
    p = np.exp(log_softmax(record["scores"] / temperature))
    probs = {c: float(v) for c, v in zip(record["classes"], p)}
    return grid_rule(probs, record["mean"]) if record["attribute"] == "compute" else probs


def fit_estimator(
    x: np.ndarray,
    labels: list[str],
    model_sha256: str,
    reference: str,
    calibrate_ns: tuple[int, ...] = (1, 4, 16),
    trained_on: dict | None = None,
    gguf_weights: dict[str, str] | None = None,
) -> tuple[LlmEstimator, list[dict]]:
    """The estimator from features ``x`` (platforms, requests, features) of ``labels``, with
    temperatures fitted on leave-one-stack-out predictions at ``calibrate_ns`` requests; also
    returns those predictions."""
    if x.ndim != 3 or x.shape[0] != len(labels) or x.shape[2] != len(FEATURES):
        raise HspiError("features must be (platforms, requests, features)")
    stacks = {stack_of(lab) for lab in labels}
    if len(stacks) < 3:
        raise HspiError(f"an estimator needs answers of at least 3 stacks; the DB holds {len(stacks)}")
    y = attribute_table(labels, gguf_weights)
    n_req = x.shape[1]
    flat = np.nan_to_num(x.reshape(-1, x.shape[2]), nan=0.0)
    mean, scale = feature_scaler(flat)
    z = (flat - mean) / scale
    loso = leave_one_stack_out(x, labels, [n for n in calibrate_ns if n <= n_req] or [n_req], gguf_weights=gguf_weights)
    attrs = {}
    for name in ATTRIBUTES:
        ys = np.repeat(y[name], n_req)
        if len(set(ys)) < 2:
            continue
        m = _fit_attribute(z, ys)
        m.temperature = fit_temperature([r for r in loso if r["attribute"] == name])
        attrs[name] = m
    per_platform = {lab: z.reshape(x.shape[0], n_req, -1)[i].mean(axis=0) for i, lab in enumerate(labels)}
    info = {"platforms": len(labels), "stacks": len(stacks), "requests": n_req, **(trained_on or {})}
    est = LlmEstimator(model_sha256, reference, mean, scale, attrs, per_platform, info, dict(gguf_weights or {}))
    return est, loso


def estimator_path(db_root: str | Path, model_sha256: str) -> Path:
    """Where ``hspi db estimator`` keeps a DB's estimator for a model."""
    return Path(db_root) / "estimators" / f"{model_sha256[:16]}.json"


def loso_accuracy(records: list[dict]) -> dict[str, dict[int, float]]:
    """attribute -> n requests -> share of out-of-stack predictions whose most likely class is the
    truth (the temperature does not move the most likely class; the grid rule may)."""
    hits: dict[str, dict[int, list[bool]]] = {}
    for r in records:
        probs = calibrated(r, 1.0)
        hits.setdefault(r["attribute"], {}).setdefault(r["n"], []).append(
            max(probs, key=lambda c: probs[c]) == r["truth"]
        )
    return {a: {n: float(np.mean(v)) for n, v in sorted(per.items())} for a, per in hits.items()}
