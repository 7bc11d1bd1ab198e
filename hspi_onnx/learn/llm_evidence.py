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
# Logits of size 2 to 32 kept in bf16 (8 significant bits) are multiples of 2**-6 .. 2**-3, in fp16
# (11 bits) of 2**-9 .. 2**-6: a grid at most this fine is read as that dtype (grid_exponent).
BF16_GRID, FP16_GRID = 5, 9
FLOOR = 1e-6  # errors below this (a float32 unit of a log-probability near 1) count as this
FEATURES = (
    "log_err_median",
    "log_err_mean",
    "log_err_p90",
    "log_err_max",
    "err_bias",
    "err_zero_frac",
    "log_rel_err_median",
    "err_position_slope",
    "top1_flip_frac",
    "inversions_mean",
    "grid_median",
    "grid_bf16_frac",
    "grid_fp16_frac",
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
    (-1 ids and NaN values where unknown), ``ref`` the reference's rows on the same tokens.
    Error sizes are on a log10 scale (an error of 0.01 nats: -2), floored at :data:`FLOOR`;
    ``err_bias`` is the mean signed error over the mean absolute one; ``log_rel_err_median`` the
    error over the reference's own difference; ``err_position_slope`` how the log error grows per
    generated position (least squares). NaN throughout when no position can be compared."""
    errs: list[float] = []
    rel: list[float] = []
    where_at: list[int] = []
    flips = inversions = 0
    grids, gaps = [], []
    n = min(len(top_ids), len(ref["topk_ids"]))
    used = 0
    for j in range(n):
        ids, lps = top_ids[j], np.asarray(logprobs[j], dtype=np.float64)
        if ids[0] < 0 or not np.isfinite(lps[0]):
            continue
        used += 1
        grids.append(grid_exponent(lps))
        if len(lps) > 1 and np.isfinite(lps[1]):
            gaps.append(lps[0] - lps[1])
        rids, rlps = ref["topk_ids"][j].astype(np.int64), ref["topk_logprobs"][j].astype(np.float64)
        where = {int(t): i for i, t in enumerate(rids) if t >= 0 and np.isfinite(rlps[i])}
        flips += int(int(rids[0]) != int(ids[0]))
        inversions += _inversions([int(t) for t in ids if t >= 0], where)
        if int(ids[0]) not in where:
            continue
        base = rlps[where[int(ids[0])]]
        for t, v in zip(ids[1:], lps[1:]):
            if t >= 0 and int(t) in where and np.isfinite(v):
                want = rlps[where[int(t)]] - base
                errs.append((v - lps[0]) - want)
                rel.append(abs(errs[-1]) / max(abs(want), FLOOR))
                where_at.append(j)
    if not used:
        return np.full(len(FEATURES), np.nan)
    e = np.asarray(errs) if errs else np.zeros(1)
    a = np.abs(e)
    g = np.asarray(grids, dtype=np.float64)
    log_a = np.log10(np.maximum(a, FLOOR))
    pos = np.asarray(where_at, dtype=np.float64)
    slope = 0.0
    if len(pos) > 2 and pos.std() > 0:
        slope = float(np.polyfit(pos, log_a[: len(pos)], 1)[0])
    return np.array(
        [
            float(np.median(log_a)),
            float(np.log10(max(a.mean(), FLOOR))),
            float(np.log10(max(np.quantile(a, 0.9), FLOOR))),
            float(np.log10(max(a.max(), FLOOR))),
            float(e.mean() / max(a.mean(), FLOOR)),
            float((a == 0).mean()),
            float(np.log10(max(np.median(rel), FLOOR))) if rel else np.log10(FLOOR),
            slope,
            flips / used,
            inversions / used,
            float(np.median(g)),
            float((g <= BF16_GRID).mean()),
            float(((g > BF16_GRID) & (g <= FP16_GRID)).mean()),
            float(np.mean(gaps)) if gaps else 0.0,
        ]
    )


def logits_dtype(grids: np.ndarray) -> dict[str, float]:
    """What the grid of the printed log-probabilities says about the dtype the logits were kept
    in: the share of positions whose grid reads bf16, fp16, or none (float32 or wider)."""
    g = np.asarray(grids, dtype=np.float64)
    if not len(g):
        return {}
    return {
        "bf16": float((g <= BF16_GRID).mean()),
        "fp16": float(((g > BF16_GRID) & (g <= FP16_GRID)).mean()),
        "fp32": float((g > FP16_GRID).mean()),
    }


def platform_features(
    data: dict[str, dict[str, np.ndarray]], labels: list[str], index: np.ndarray, ref_rows: list[dict], k: int = 5
) -> np.ndarray:
    """Features (platforms, chats, :data:`FEATURES`) of DB platforms' answers: ``data[label]`` the
    platform's generation outputs on the chats, ``index[p, c]`` which of ``ref_rows`` (the
    reference teacher-forced on each distinct answer) holds the reference on platform p's tokens
    of chat c; the first ``k`` alternatives of each answer, as a server returns them."""
    out = np.full((len(labels), index.shape[1], len(FEATURES)), np.nan)
    for p, label in enumerate(labels):
        rows = data[label]
        for c in range(index.shape[1]):
            ids = rows["topk_ids"][c][:, :k].astype(np.int64)
            lps = rows["topk_logprobs"][c][:, :k].astype(np.float64)
            live = rows["tokens"][c] >= 0
            out[p, c] = request_features(ids[live], lps[live], ref_rows[int(index[p, c])])
    return out
