"""Evidence about an LLM stack that carries over to stacks the DB does not hold: how its answers'
top-k log-probabilities deviate from a high-precision reference of the same model teacher-forced
on the same tokens, and the arithmetic grid of the log-probabilities themselves.

Per answered request (a :class:`~hspi_onnx.match.generation.GenerationQuery` with top-k ids and
log-probabilities) and the reference's rows on its tokens (``topk_ids``, ``topk_logprobs``):

* errors: at every position, each alternative's log-probability relative to the answer's first
  alternative, minus the reference's for the same ids (relative values: blind to the server's
  normalizer); their size and spread, how often the first alternative differs from the
  reference's, and how many pairs of alternatives the two order differently;
* the grid: differences of log-probabilities are differences of logits (up to the server's
  float32 rounding), so logits kept in bf16 or fp16 put them on multiples of a power of two
  (bf16 logits of size 4 to 8: multiples of 1/32). :func:`grid_exponent` finds, per position,
  the coarsest ``2**-g`` every difference is a multiple of within that rounding (24: no grid).

:data:`FEATURES` names the numbers :func:`request_features` returns, in order.
"""

from __future__ import annotations

import numpy as np

NO_GRID = 24
FEATURES = (
    "err_mean_abs",
    "err_median_abs",
    "err_p90_abs",
    "err_max_abs",
    "err_mean",
    "err_std",
    "err_zero_frac",
    "top1_flip_frac",
    "inversions_mean",
    "grid_median",
    "grid_coarse_frac",
    "grid_mid_frac",
    "top1_logprob_mean",
    "gap12_mean",
)


def _spacing32(x: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(np.asarray(x, dtype=np.float64)).astype(np.float32)).astype(np.float64)


def grid_exponent(logprobs: np.ndarray) -> int:
    """The smallest ``g`` (0..23) such that every difference ``lp_0 - lp_i`` of one position's
    log-probabilities is a multiple of ``2**-g`` within 4 float32 units of each value; 24 when none,
    or when a grid that fine is no longer above that rounding (the slack over 1/20 of a step)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    lp = lp[np.isfinite(lp)]
    if len(lp) < 2:
        return NO_GRID
    d = lp[0] - lp[1:]
    tol = 4 * (_spacing32(lp[1:]) + _spacing32(lp[0]))
    for g in range(NO_GRID):
        slack = tol * 2.0**g
        if slack.max() > 0.05:  # a grid this fine is within the rounding: no evidence of one
            return NO_GRID
        scaled = d * 2.0**g
        if (np.abs(scaled - np.rint(scaled)) <= slack).all():
            return g
    return NO_GRID


def _inversions(order_a: list[int], rank_b: dict[int, int]) -> int:
    ranks = [rank_b[t] for t in order_a if t in rank_b]
    return sum(1 for i in range(len(ranks)) for j in range(i + 1, len(ranks)) if ranks[i] > ranks[j])


def request_features(top_ids: np.ndarray, logprobs: np.ndarray, ref: dict[str, np.ndarray]) -> np.ndarray:
    """:data:`FEATURES` of one answered request: ``top_ids``/``logprobs`` (L, k) as returned
    (-1 ids and NaN values where unknown), ``ref`` the reference's rows on the same tokens."""
    errs: list[float] = []
    flips = inversions = 0
    grids, tops, gaps = [], [], []
    n = min(len(top_ids), len(ref["topk_ids"]))
    used = 0
    for j in range(n):
        ids, lps = top_ids[j], np.asarray(logprobs[j], dtype=np.float64)
        if ids[0] < 0 or not np.isfinite(lps[0]):
            continue
        used += 1
        grids.append(grid_exponent(lps))
        tops.append(lps[0])
        if len(lps) > 1 and np.isfinite(lps[1]):
            gaps.append(lps[0] - lps[1])
        rids, rlps = ref["topk_ids"][j].astype(np.int64), ref["topk_logprobs"][j].astype(np.float64)
        where = {int(t): i for i, t in enumerate(rids) if t >= 0}
        flips += int(int(rids[0]) != int(ids[0]))
        inversions += _inversions([int(t) for t in ids if t >= 0], where)
        if int(ids[0]) not in where:
            continue
        base = rlps[where[int(ids[0])]]
        for t, v in zip(ids[1:], lps[1:]):
            if t >= 0 and int(t) in where and np.isfinite(v):
                errs.append((v - lps[0]) - (rlps[where[int(t)]] - base))
    if not used:
        return np.full(len(FEATURES), np.nan)
    e = np.asarray(errs) if errs else np.zeros(1)
    a = np.abs(e)
    g = np.asarray(grids, dtype=np.float64)
    return np.array(
        [
            a.mean(),
            np.median(a),
            np.quantile(a, 0.9),
            a.max(),
            e.mean(),
            e.std(),
            float((a == 0).mean()),
            flips / used,
            inversions / used,
            float(np.median(g)),
            float((g <= 8).mean()),
            float(((g > 8) & (g <= 12)).mean()),
            float(np.mean(tops)),
            float(np.mean(gaps)) if gaps else 0.0,
        ]
    )
