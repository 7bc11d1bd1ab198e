"""How far a language-model suspect's answers are from one DB platform's generations, token by
token: what the audit report plots for the claimed stack and for the best-matching one.

At each generated position where the suspect returned its top-k alternatives, the deviation is the
largest difference, over those alternatives the platform also ranks in its stored top-k, between
the two log-probabilities taken relative to the suspect's own first alternative:
``|(lp_i - lp_0)_suspect - (lp_i - lp_0)_platform|`` in nats. Relative values make it blind to
a server's own normalizer (docs/llm-audit.md), so a server computing log-softmax its own way
shows 0 where its logits are the platform's. A position whose first alternative the platform does
not rank at all is ``None`` with ``outside`` set. Comparing stops where the suspect's token leaves
the platform's greedy path: after that the two continue from different prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hspi_onnx.match.generation import GenerationQuery

ROUNDING = 1e-5  # nats: above float32 rounding of log-probabilities of this size (|lp| < 64)


@dataclass
class Deviation:
    """One chat's per-position deviations from one platform."""

    values: list[float | None] = field(default_factory=list)  # per compared position (nats)
    outside: list[int] = field(default_factory=list)  # positions whose first alternative it does not rank
    parted_at: int | None = None  # the first position whose token differs from the platform's greedy one
    compared: int = 0  # positions compared

    def first_difference(self, above: float = ROUNDING) -> int | None:
        """The first position where the answer differs from the platform: its token path parts,
        its first alternative is not ranked, or the deviation exceeds ``above``."""
        at = [j for j, v in enumerate(self.values) if v is not None and v > above] + self.outside
        if self.parted_at is not None:
            at.append(self.parted_at)
        return min(at) if at else None

    @property
    def largest(self) -> float | None:
        finite = [v for v in self.values if v is not None]
        if self.outside:
            return float("inf")
        return max(finite) if finite else None

    def as_dict(self) -> dict:
        return {
            "deviation": [None if v is None else float(v) for v in self.values],
            "outside_top_k": self.outside,
            "parted_at": self.parted_at,
            "compared": self.compared,
        }


def deviation(q: GenerationQuery, rows: dict[str, np.ndarray]) -> Deviation:
    """The deviation of one answered chat ``q`` from one platform's DB rows of that chat
    (``tokens``, ``topk_ids``, ``topk_logprobs``)."""
    out = Deviation()
    tokens = rows["tokens"].astype(np.int64)
    top_ids, top_lp = rows["topk_ids"].astype(np.int64), rows["topk_logprobs"].astype(np.float64)
    n = min(len(q.tokens), len(tokens))
    for j in range(n):
        out.compared += 1
        out.values.append(_at(q, j, top_ids[j], top_lp[j], out))
        wanted = q.token_sets.get(j, frozenset([int(q.tokens[j])]))
        if int(tokens[j]) not in wanted:
            out.parted_at = j
            break
    return out


def _at(q: GenerationQuery, j: int, ids: np.ndarray, lps: np.ndarray, out: Deviation) -> float | None:
    if q.top_ids is None or q.logprobs is None or j in q.skipped:
        return None
    where = {int(t): i for i, t in enumerate(ids) if t >= 0}
    first = int(q.top_ids[j, 0])
    if first < 0 or first not in where:  # ambiguous or not ranked by the platform
        if first >= 0:
            out.outside.append(j)
        return None
    base_s, base_p = q.logprobs[j, 0], lps[where[first]]
    diffs = [
        abs((q.logprobs[j, i] - base_s) - (lps[where[int(t)]] - base_p))
        for i, t in enumerate(q.top_ids[j])
        if int(t) in where
    ]
    return float(max(diffs))


def rank_key(devs: list[Deviation]) -> tuple[int, int, float]:
    """How well a platform explains a suspect over all its chats, smaller first: (chats whose
    path parts from it, positions whose first alternative it does not rank, mean deviation)."""
    parted = sum(1 for d in devs if d.parted_at is not None)
    outside = sum(len(d.outside) for d in devs)
    values = [v for d in devs for v in d.values if v is not None]
    return parted, outside, float(np.mean(values)) if values else 0.0
