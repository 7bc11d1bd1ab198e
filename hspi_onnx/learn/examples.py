"""Training examples: one feature row per (platform, probe) of a reference DB, in one output form.

A row knows its model, probe id, platform label and equivalence class, so protocols can split
by probe, by runtime or by model without ever splitting a probe's rows apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hspi_onnx.db.dataset import Group
from hspi_onnx.db.manifest import Manifest
from hspi_onnx.forms import degrade
from hspi_onnx.learn.features import NAMES, ieee_bits, row_features
from hspi_onnx.learn.reference import reference_for
from hspi_onnx.learn.targets import target_table

PLATFORM = "platform"  # the full-label target: predicted as an equivalence class
BITS_VALUES = 10  # values per output whose bits feed the svm-bits baseline


@dataclass
class Examples:
    form: str
    X: np.ndarray  # (rows, len(NAMES)) float32
    bits: np.ndarray  # (rows, 32 * BITS_VALUES) uint8, the baseline's input
    label: np.ndarray  # platform label per row
    klass: np.ndarray  # equivalence-class key per row (platform target)
    model: np.ndarray  # model name per row
    probe: np.ndarray  # probe id per row
    unit: np.ndarray  # (model, platform) index per row: queries are drawn within one unit

    feature_names = NAMES

    def __len__(self) -> int:
        return len(self.label)

    def targets(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """target name -> value per row; ``platform`` is the equivalence class."""
        table = target_table(sorted(set(self.label.tolist())))
        out = {PLATFORM: self.klass}
        for t, by_label in table.items():
            out[t] = np.array([by_label[lab] for lab in self.label], dtype=object)
        if names:
            missing = [n for n in names if n not in out]
            if missing:
                from hspi_onnx.errors import HspiError

                raise HspiError(f"unknown target(s) {', '.join(missing)}; this DB has {', '.join(out)}")
            out = {n: out[n] for n in names}
        return out

    def subset(self, mask: np.ndarray) -> Examples:
        return Examples(
            self.form,
            self.X[mask],
            self.bits[mask],
            self.label[mask],
            self.klass[mask],
            self.model[mask],
            self.probe[mask],
            self.unit[mask],
        )


def references(groups: list[Group], manifest: Manifest, warn=lambda m: None) -> list:
    """The float64 reference of each group (None where there is none)."""
    return [reference_for(manifest, g.model_sha256, g.probes_sha256, g.ids, g.output_name, warn) for g in groups]


def build_examples(
    groups: list[Group],
    form: str,
    manifest: Manifest,
    warn=lambda m: None,
    on_platform=lambda: None,
    refs: list | None = None,
) -> Examples:
    """Feature rows of every platform of every group, in output form ``form`` (``refs``: the
    groups' references when already loaded, see :func:`references`)."""
    parts: dict[str, list] = {k: [] for k in ("X", "bits", "label", "klass", "model", "probe", "unit")}
    unit = 0
    for k, g in enumerate(groups):
        ref = (
            refs[k]
            if refs is not None
            else reference_for(manifest, g.model_sha256, g.probes_sha256, g.ids, g.output_name, warn)
        )
        classes = g.classes()
        for label in g.platforms:
            view = degrade(g.outputs[label], form)
            n = len(g.ids)
            parts["X"].append(row_features(view, form, ref))
            parts["bits"].append(ieee_bits(view, BITS_VALUES))
            parts["label"].append(np.full(n, label, dtype=object))
            parts["klass"].append(np.full(n, classes[label], dtype=object))
            parts["model"].append(np.full(n, g.model_name, dtype=object))
            parts["probe"].append(g.ids)
            parts["unit"].append(np.full(n, unit))
            unit += 1
            on_platform()
    return Examples(
        form, *(np.concatenate(parts[k]) for k in ("X", "bits", "label", "klass", "model", "probe", "unit"))
    )


def draw_groups(ex: Examples, mask: np.ndarray, n: int, max_per_unit: int, seed: int) -> list[np.ndarray]:
    """Groups of ``n`` distinct rows of one unit, drawn from rows in ``mask``."""
    rng = np.random.default_rng(seed + 7919 * n)
    groups = []
    for u in np.unique(ex.unit[mask]):
        rows = np.flatnonzero(mask & (ex.unit == u))
        if len(rows) < n:
            continue
        per_perm = len(rows) // n
        reps = max(1, min(8, -(-max_per_unit // per_perm)))
        unit_groups = []
        for _ in range(reps):
            perm = rng.permutation(rows)
            unit_groups += [perm[k * n : (k + 1) * n] for k in range(per_perm)]
        groups += unit_groups[:max_per_unit]
    return groups
