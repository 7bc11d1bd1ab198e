"""Exact evidence: digests of raw outputs, degraded forms compared as printed, classes ruled out, nearest platforms."""

from __future__ import annotations

from collections import Counter

import numpy as np

from hspi_onnx.db.dataset import Group, outputs_at
from hspi_onnx.db.index import DigestIndex
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import View, degrade
from hspi_onnx.match.printed import FIXED
from hspi_onnx.match.suspect import Suspect

from .results import NEAREST, ExactEvidence, Nearest, Resolved


# -- evidence ---------------------------------------------------------------------------------
def exact_raw(index: DigestIndex, res: Resolved, suspect: Suspect) -> list[set[str]]:
    """Per query: the platforms whose every output the suspect holds is bit-identical."""
    per_query: list[set[str]] | None = None
    for key, name in res.outputs.items():
        j = res.group.output_index(name)
        hits = [index.lookup(res.group_index, int(pid), d, j) for pid, d in zip(suspect.ids, suspect.digests(key))]
        per_query = hits if per_query is None else [a & b for a, b in zip(per_query, hits)]
    return per_query or []


def exact_values(db: ReferenceDB, res: Resolved, suspect: Suspect) -> list[set[str]]:
    """Per query: the platforms whose every output the suspect holds has its dtype and equal
    values, any NaN equal to any NaN. For text suspects: a printed NaN has lost its payload
    bits (x86 kernels return a negative quiet NaN, JSON readers make a positive one)."""
    per_query: list[set[str]] | None = None
    for key, name in res.outputs.items():
        mine = suspect.outputs[key].reshape(len(suspect), -1)
        hits: list[set[str]] = [set() for _ in range(len(suspect))]
        for label, arr in outputs_at(db, res.group.model_sha256, res.group.probes_sha256, suspect.ids, name).items():
            if arr.dtype != mine.dtype:
                continue
            theirs = arr.reshape(len(arr), -1)
            x, y = mine.astype(np.float64), theirs.astype(np.float64)
            same = (mine.view(np.uint8).reshape(len(mine), -1) == theirs.view(np.uint8).reshape(len(theirs), -1)).all(
                axis=1
            )
            same |= ((x == y) & (np.signbit(x) == np.signbit(y)) | (np.isnan(x) & np.isnan(y))).all(axis=1)
            for q in np.flatnonzero(same):
                hits[q].add(label)
        per_query = hits if per_query is None else [a & b for a, b in zip(per_query, hits)]
    return per_query or []


def _same_view(a: View, b: View, form: str) -> np.ndarray:
    """Per query: does view ``a`` equal view ``b`` (the DB platform degraded the same way)?"""
    rows = a.values if a.values is not None else a.index
    assert rows is not None  # a view holds values, indices or both
    ok = np.ones(len(rows), dtype=bool)
    if a.index is not None:
        ok &= (a.index == b.index).all(axis=1)
    if a.values is not None and form != "softmax":
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # infinities equal, NaN as NaN
        with np.errstate(invalid="ignore"):
            near = np.abs(x - y) <= 1e-12 * np.abs(y)  # decimal printing may differ in the last bit
        if form.startswith("round"):
            ok &= (same | near).all(axis=1)
        elif form == "logprobs":  # float64 as printed (up to the last bit), or cast to float32 and printed
            ok &= (same | near | (x == y.astype(np.float32))).all(axis=1)
        else:
            x32, y32 = np.asarray(a.values, np.float32), np.asarray(b.values, np.float32)
            ok &= ((x32 == y32) | (np.isnan(x32) & np.isnan(y32))).all(axis=1)
    return ok


def _distance(a: View, b: View) -> float:
    """Mean distance of two views: log2(1 + |x - y| / ulp32(y)) over values, index mismatches count 24."""
    parts = []
    if a.values is not None:
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        ulp = np.maximum(np.spacing(np.abs(y).astype(np.float32)).astype(np.float64), 1e-45)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.log2(1 + np.abs(x - y) / ulp)
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # inf == inf, NaN as NaN
        parts.append(np.where(same, 0.0, np.where(np.isfinite(d), d, 24.0)).ravel())
    if a.index is not None:
        parts.append(24.0 * (a.index != b.index).ravel())
    return float(np.concatenate(parts).mean())


EPS32 = 2.0**-24


@np.errstate(invalid="ignore", over="ignore", divide="ignore")  # rows holding inf or NaN
def _printed_candidates(arr: np.ndarray, form: str, k: int | None) -> list[tuple[View, np.ndarray | float]]:
    """What a service could have held for ``arr`` in ``form`` before printing, each with the
    absolute error its own arithmetic may add: the values themselves (the printing rounds them);
    softmax and log-softmax computed in float64 (exact, or cast to float32), or in float32
    arithmetic, whose result may lie anywhere within a few float32 roundings of each step
    (bounded, since frameworks order the steps differently)."""
    from hspi_onnx.forms import log_softmax, top_indices

    rows = np.asarray(arr).reshape(len(arr), -1).astype(np.float64)
    spread = rows - rows.max(axis=1, keepdims=True)
    if form in ("softmax", "logprobs"):
        lp = log_softmax(rows)
        log_sum = np.log(np.exp(spread).sum(axis=1, keepdims=True))
        if form == "softmax":
            p = np.exp(lp)
            slack = p * EPS32 * (8 + 2 * np.abs(spread))
            if k is None:
                return [(View(p), 0.0), (View(p.astype(np.float32)), 0.0), (View(p), slack)]
            idx = top_indices(p, min(k, p.shape[1]))  # the top k probabilities, with their indices
            top, sl = np.take_along_axis(p, idx, axis=1), np.take_along_axis(slack, idx, axis=1)
            return [(View(top, idx), 0.0), (View(top.astype(np.float32), idx), 0.0), (View(top, idx), sl)]
        idx = top_indices(lp, min(k or 5, lp.shape[1]))
        at = lambda x: np.take_along_axis(np.broadcast_to(x, lp.shape), idx, axis=1)  # noqa: E731
        slack = at(8 * EPS32 * (np.abs(rows) + np.abs(rows.max(axis=1, keepdims=True)) + np.abs(log_sum)))
        top = np.take_along_axis(lp, idx, axis=1)
        return [(View(top, idx), 0.0), (View(top.astype(np.float32), idx), 0.0), (View(top, idx), slack)]
    if form.startswith("round"):
        return [(View(rows), 0.0)]
    return [(degrade(arr, form, k), 0.0)]


def _within_print(view: View, candidates: list, precision) -> np.ndarray:
    """Per query: does some candidate (within its arithmetic's error) print as the suspect's
    numbers, and give its indices?"""
    assert view.values is not None  # printed numbers: by_print() checked the suspect has values
    ok = np.zeros(len(view.values), dtype=bool)
    for c, slack in candidates:
        x = np.asarray(c.values, np.float64)
        with np.errstate(invalid="ignore"):
            within = (x + slack >= precision.lo) & (x - slack <= precision.hi)
        within |= np.isnan(x) & np.isnan(precision.lo)  # NaN prints as NaN whatever its bits
        hit = within.reshape(len(x), -1).all(axis=1)
        if view.index is not None:
            hit &= (view.index == c.index).all(axis=1)
        ok |= hit
    return ok


def by_print(suspect: Suspect) -> bool:
    """Are the suspect's values compared as printed numbers? Fixed digits stand for intervals;
    printed softmax values (any printing) are the service's own arithmetic, tried in float64 and
    float32 (:mod:`hspi_onnx.match.printed`)."""
    return (
        suspect.printed is not None
        and suspect.values is not None
        and (suspect.printed.mode == FIXED or suspect.form == "softmax")
    )


def compare_db(outs: dict[str, np.ndarray], suspect: Suspect) -> tuple[list[set[str]], list[Nearest]]:
    """(per query the platforms whose degraded outputs equal the suspect's, the nearest platforms),
    given every DB platform's compared output on the suspect's probes (``outs``)."""
    view = suspect.view()
    k = None if view.index is None else view.index.shape[1]
    fixed = by_print(suspect)
    per_query: list[set[str]] = [set() for _ in range(len(suspect))]
    dist = []
    for label, arr in outs.items():
        v = degrade(arr, suspect.form, k)
        if fixed:
            same = _within_print(view, _printed_candidates(arr, suspect.form, k), suspect.printed)
        else:
            same = _same_view(view, v, suspect.form) if suspect.form != "softmax" else np.zeros(len(suspect), bool)
        for q in np.flatnonzero(same):
            per_query[q].add(label)
        dist.append((_distance(view, v), label))
    dist.sort()
    return per_query, [Nearest(lab, round(d, 4)) for d, lab in dist[:NEAREST]]


def summarise(per_query: list[set[str]], kind: str) -> ExactEvidence:
    common = set.intersection(*per_query) if per_query else set()
    counts = Counter(lab for s in per_query for lab in s)
    ranked = sorted(counts, key=lambda lab: (-counts[lab], lab))
    return ExactEvidence(
        kind,
        len(per_query),
        sum(1 for s in per_query if s),
        sorted(common),
        {lab: counts[lab] for lab in ranked[:10]},
        ranked,
        [sorted(s) for s in per_query],
    )


def rule_out_classes(exact: ExactEvidence, outs: dict[str, np.ndarray], ids: np.ndarray) -> None:
    """Fill in which equivalence classes of the DB (platforms bit-identical on the suspect's
    queries, compared output) the suspect rules out: those that fail to reproduce some query."""
    keys = Group("", "", "", "", ids, outs).classes()
    classes = sorted(set(keys.values()))
    left = {keys[p] for p in exact.common if p in keys}
    exact.classes, exact.classes_left = len(classes), len(left)
    exact.ruled_out = [k.split(" | ") for k in classes if k not in left]
