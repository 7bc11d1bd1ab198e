"""Targets a classifier predicts, derived from platform labels: the equivalence class for the
full platform (see :mod:`hspi_onnx.learn.examples`), and each attribute — runtime, precision,
device, runtime version, every knob — on its own."""

from __future__ import annotations

from collections import defaultdict

from hspi_onnx.labels import Platform

NOT_APPLICABLE = "-"  # value of a knob target for a platform that lacks the knob


def attribute_values(label: str, knob_names: list[str]) -> dict[str, str]:
    p = Platform.parse(label)
    values = {"runtime": p.runtime, "version": f"{p.runtime}@{p.version}", "device": p.device, "precision": p.precision}
    for k in knob_names:
        values[k] = p.knob.get(k, NOT_APPLICABLE)
    return values


def target_table(labels: list[str]) -> dict[str, dict[str, str]]:
    """target -> {label -> value} for every attribute that takes at least two values and is not a
    renaming of another; a knob constant within each runtime (a measured knob only one runtime
    has, e.g. ``blas`` of the ONNX reference: it only says "this is the ONNX reference") says
    nothing the runtime target does not, and is no target either."""
    knob_names = sorted({k for lab in labels for k, _ in Platform.parse(lab).knobs})
    per_label = {lab: attribute_values(lab, knob_names) for lab in labels}
    targets: dict[str, dict[str, str]] = {}
    seen: list[set] = []
    for name in ["runtime", "precision", "device", "version", *knob_names]:
        values = {lab: per_label[lab][name] for lab in labels}
        partition = _partition(values)
        if name in knob_names and "runtime" in targets and _coarser(partition, seen[0]):
            continue
        if len(set(values.values())) > 1 and partition not in seen:  # a renaming of another target adds nothing
            targets[name] = values
            seen.append(partition)
    return targets


def _coarser(partition: set, other: set) -> bool:
    """Whether every block of ``other`` lies inside one block of ``partition`` (equal counts)."""
    return all(any(block <= mine for mine in partition) for block in other)


def _partition(values: dict[str, str]) -> set:
    by: dict[str, list[str]] = defaultdict(list)
    for lab, v in values.items():
        by[v].append(lab)
    return {frozenset(m) for m in by.values()}
