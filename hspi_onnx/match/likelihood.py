"""Likelihood evidence for sampled chat traffic logged without log-probabilities.

The logged answers are teacher-forced on every candidate stack (:mod:`.chat_replay`); each stack's
forced rows hold, at every position, its top-k token ids and log-probabilities (temperature 1)
before that token. The log-probability a stack gives the logged token is read there; positions
where any candidate does not rank the logged token in its stored top-k are left out (their value
is unknown), and the number left out is reported.

Decision: with ``L_s`` the summed log-likelihood of the answers under stack ``s`` and ``b`` the
stack with the largest, stack ``s`` is rejected once ``L_b - L_s >= log((m - 1) / alpha)`` (``m``
candidate stacks). Calibration: if the answers were sampled from ``s`` (exactly the
distribution the DB recorded for it), each ratio ``p_c / p_s`` of another candidate's likelihood is
a nonnegative martingale with mean 1 over the tokens, so by Ville's inequality it ever reaches
``(m - 1) / alpha`` with probability at most ``alpha / (m - 1)``; over the ``m - 1`` others, the
true stack is rejected with probability at most ``alpha``, at any number of tokens, and
monitoring token by token (the tokens each rejection needed) keeps that bound. It holds for what the
DB recorded: temperature 1 with no nucleus or top-k truncation, the answers tokenized as the
server generated them. The positions left out make it approximate; bench/llm_likelihood.py
measures it.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.01


def token_logprobs(tokens: np.ndarray, rows: dict[str, np.ndarray]) -> np.ndarray:
    """The log-probability a stack's forced rows give each logged token (NaN where the token is
    not among its stored top-k)."""
    n = len(tokens)
    ids, lps = rows["topk_ids"][:n].astype(np.int64), rows["topk_logprobs"][:n].astype(np.float64)
    hit = ids == np.asarray(tokens, dtype=np.int64)[:, None]
    out = np.full(n, np.nan)
    found = hit.any(axis=1)
    out[found] = lps[found, hit[found].argmax(axis=1)]
    return out


def likelihood_decision(per_stack: dict[str, np.ndarray], alpha: float = ALPHA) -> dict:
    """``per_stack``: label -> the logged tokens' log-probabilities in log order (NaN: unknown).
    The stacks rejected against the most likely one, with the tokens each rejection needed."""
    labels = sorted(per_stack)
    matrix = np.vstack([per_stack[label] for label in labels]) if labels else np.zeros((0, 0))
    usable = np.isfinite(matrix).all(axis=0) if labels else np.zeros(0, dtype=bool)
    used = matrix[:, usable]
    cumulative = np.cumsum(used, axis=1) if used.size else np.zeros((len(labels), 0))
    totals = cumulative[:, -1] if cumulative.shape[1] else np.zeros(len(labels))
    threshold = math.log(max(len(labels) - 1, 1) / alpha)
    best = int(np.argmax(totals)) if labels else -1
    stacks = {}
    for i, label in enumerate(labels):
        gap = cumulative.max(axis=0) - cumulative[i] if cumulative.shape[1] else np.zeros(0)
        crossed = np.nonzero(gap >= threshold)[0]
        stacks[label] = {
            "loglik": float(totals[i]),
            "gap_to_best": float(totals[best] - totals[i]) if labels else 0.0,
            "rejected": bool(crossed.size),
            "tokens_needed": int(crossed[0]) + 1 if crossed.size else None,
            "gap_by_token": [round(float(g), 4) for g in gap],  # behind the most likely, after each scored token
        }
    return {
        "alpha": alpha,
        "threshold_nats": threshold,
        "tokens": int(matrix.shape[1]),
        "tokens_used": int(usable.sum()),
        "tokens_left_out": int(matrix.shape[1] - usable.sum()),
        "most_likely": labels[best] if labels else None,
        "stacks": stacks,
    }


def likelihood_report(db, suspect, alpha: float = ALPHA) -> dict:
    """The match report of a replayed log of sampled answers (every query ``likelihood``): the
    DB platforms of the replay group not rejected, their classes and the verdict, with the
    per-stack likelihoods and the tokens each rejection needed."""
    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.match.generation import kept_classes, report_head, suspect_group

    model_sha, probes_sha = suspect_group(db, suspect)
    ids = [q.probe_id for q in suspect.queries]
    data = generation_outputs(db, model_sha, probes_sha, ids)
    per_stack = {
        label: np.concatenate(
            [token_logprobs(q.tokens, {k: v[i] for k, v in rows.items()}) for i, q in enumerate(suspect.queries)]
        )
        for label, rows in data.items()
    }
    decision = likelihood_decision(per_stack, alpha)
    keep = [label for label, s in decision["stacks"].items() if not s["rejected"]]
    group, classes, verdict = kept_classes(db, model_sha, probes_sha, keep)
    return report_head(suspect, group) | {
        "evidence": "likelihood",
        "normalizer": "exact",
        "ambiguous_tokens": 0,
        "verdict": verdict,
        "classes": classes,
        "n_db_platforms": len(data),
        "likelihood": decision,
    }
