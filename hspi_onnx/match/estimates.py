"""A language-model suspect's evidence for the estimator (hspi_onnx/learn/llm_estimator.py): the
tokens to teacher-force the reference on, and each answer's features against it."""

from __future__ import annotations

import numpy as np

from hspi_onnx.learn.llm_evidence import FEATURES, request_features
from hspi_onnx.match.generation import GenerationSuspect


def suspect_items(suspect: GenerationSuspect) -> list[tuple[int, list[int]]]:
    """(probe id, tokens) per answer; a token printed as text that several ids print is taken as
    the lowest of them (the reference scores that id; its alternatives are compared as printed)."""
    items = []
    for q in suspect.queries:
        toks = [int(t) if t >= 0 else min(q.token_sets.get(j, frozenset({0}))) for j, t in enumerate(q.tokens)]
        items.append((q.probe_id, toks))
    return items


def query_features(suspect: GenerationSuspect, ref_rows: list[dict], k: int) -> np.ndarray:
    """(answers, features): each answer's first ``k`` alternatives against the reference's rows on
    its tokens; positions whose alternatives were not returned are left out."""
    out = np.full((len(suspect.queries), len(FEATURES)), np.nan)
    for n, (q, ref) in enumerate(zip(suspect.queries, ref_rows)):
        if q.top_ids is None or q.logprobs is None:
            continue
        ids, lps = q.top_ids[:, :k].copy(), q.logprobs[:, :k].astype(np.float64)
        for j in q.skipped:
            ids[j] = -1
        out[n] = request_features(ids, lps, ref)
    return out
