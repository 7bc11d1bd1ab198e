"""Where language-model stacks part: for two platforms' generations of the same chats, the first
position whose top-k differs (ids or log-probabilities) and whether the greedy texts differ.

Positions count generated tokens from 0 (0: the distribution after the prompt, which a single
request with ``max_tokens=1`` and ``top_logprobs`` already shows). A pair that never differs
within the generated tokens has no first position (None).
"""

from __future__ import annotations

import numpy as np

from hspi_onnx.db.dataset import outputs_at
from hspi_onnx.db.store import ReferenceDB

GENERATION_OUTPUTS = ("tokens", "topk_ids", "topk_logprobs")


def is_generation(outputs) -> bool:
    return all(name in outputs for name in GENERATION_OUTPUTS)


def first_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """Per probe: the first position where the two top-k lists differ (ids, or log-probabilities
    bit for bit), or -1 where they agree throughout. Arrays are ``[probes, positions, k]``."""
    ids = a["topk_ids"] != b["topk_ids"]
    lp = a["topk_logprobs"].view(np.uint32) != b["topk_logprobs"].view(np.uint32)
    differ = (ids | lp).any(axis=2)
    return np.where(differ.any(axis=1), differ.argmax(axis=1), -1)


def generation_outputs(
    db: ReferenceDB, model_sha: str, probes_sha: str, ids, logits: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """label -> {output name -> values on ``ids``} of every platform with all generation outputs
    (and ``topk_logits``, in the runtime's dtype, with ``logits``)."""
    names = GENERATION_OUTPUTS + (("topk_logits",) if logits else ())
    per_output = {name: outputs_at(db, model_sha, probes_sha, np.asarray(ids), name) for name in names}
    labels = set.intersection(*(set(v) for v in per_output.values()))
    return {label: {name: per_output[name][label] for name in names} for label in sorted(labels)}


def pairwise(db: ReferenceDB, model_sha: str, probes_sha: str, ids: list[int], classes: list[list[str]]) -> list[dict]:
    """For every pair of classes (each by its first platform): the first differing position over
    all probes, on how many probes it differs at position 0, and on how many the greedy tokens
    differ."""
    want = np.asarray(sorted(ids), dtype=np.int64)
    reps = [members[0] for members in classes]
    data = generation_outputs(db, model_sha, probes_sha, want)
    out = []
    for i, a in enumerate(reps):
        for j in range(i + 1, len(reps)):
            b = reps[j]
            if a not in data or b not in data:
                continue
            first = first_difference(data[a], data[b])
            texts = (data[a]["tokens"] != data[b]["tokens"]).any(axis=1)
            differing = first[first >= 0]
            out.append(
                {
                    "a": i,
                    "b": j,
                    "first_position": int(differing.min()) if differing.size else None,
                    "probes_differing_at_0": int((first == 0).sum()),
                    "probes_with_other_text": int(texts.sum()),
                    "n_probes": len(want),
                }
            )
    return out
