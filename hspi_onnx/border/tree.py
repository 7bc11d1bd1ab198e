"""Asking border probes adaptively: each next probe is the one whose answer best splits the
classes still consistent with the answers so far (a decision tree, grown greedily).

``table`` is (probes, classes): the top-1 label each class returns on each border probe, as
the DB built on the border set holds it. Labels either agree or not, so the decision is exact:
a class stays consistent while every answer equals its label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np


def split_score(column: np.ndarray) -> float:
    """Entropy (bits) of a probe's labels over the classes alive: the information its answer
    carries about which of them the service is."""
    _, counts = np.unique(column, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def next_probe(table: np.ndarray, alive: np.ndarray, asked: set[int]) -> int | None:
    """The probe to ask next (None when no probe splits the classes alive)."""
    best, best_score = None, 0.0
    for k in range(len(table)):
        if k in asked:
            continue
        score = split_score(table[k, alive])
        if score > best_score + 1e-12:
            best, best_score = k, score
    return best


def identify(table: np.ndarray, answer: Callable[[int], int], max_queries: int) -> tuple[np.ndarray, list[int]]:
    """(classes consistent with every answer, the probes asked in order), asking at most
    ``max_queries`` probes through ``answer(probe index) -> label``."""
    alive = np.ones(table.shape[1], dtype=bool)
    asked: list[int] = []
    while len(asked) < max_queries and alive.sum() > 1:
        k = next_probe(table, alive, set(asked))
        if k is None:
            break
        asked.append(k)
        alive &= table[k] == answer(k)
    return alive, asked


def label_table(db, probes) -> tuple[list[str], np.ndarray]:
    """(platforms, table) of the DB's platforms on ``probes`` (a border probe set the DB was
    built on): ``table[k, j]`` is the top-1 label platform ``j`` returns on probe ``k``, from the
    DB group on that probe set that holds the most platforms."""
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.errors import HspiError
    from hspi_onnx.forms import degrade

    groups = [g for g in load_groups(db) if g.probes_sha256 == probes.sha256]
    if not groups:
        raise HspiError(
            f"the DB holds no outputs on probe set {probes.name}: build it on them first "
            f"(hspi db build MODEL --db {db.root} --probes FILE)"
        )
    g = max(groups, key=lambda x: len(x.platforms))
    pos = {int(p): k for k, p in enumerate(g.ids)}
    missing = [int(p) for p in probes.ids if int(p) not in pos]
    if missing:
        raise HspiError(f"the DB lacks probe {missing[0]} of {probes.name} ({len(missing)} missing)")
    rows = [pos[int(p)] for p in probes.ids]
    platforms = list(g.platforms)
    top1 = [cast(np.ndarray, degrade(g.outputs[p], "argmax").index)[rows, 0] for p in platforms]  # argmax: indices
    return platforms, np.stack(top1, axis=1)
