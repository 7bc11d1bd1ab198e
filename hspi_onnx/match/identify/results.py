"""The typed results of matching: the resolved DB group, the evidence, the verdict, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hspi_onnx.choices import Status, Strength
from hspi_onnx.db.index import IndexGroup
from hspi_onnx.learn.targets import NOT_APPLICABLE

CONFIDENT = 0.9  # calibrated probability above which a classifier answer counts as confident
NEAREST = 5

IDENTIFIED, MIXED, CONSISTENT, LIKELY, UNKNOWN = Status  # the verdict statuses (hspi_onnx/choices.py)
STATUSES = tuple(Status)


@dataclass
class Resolved:
    """The DB group a suspect belongs to, and which of the group's outputs each of its outputs is."""

    group_index: int
    group: IndexGroup
    platforms: list[str]
    outputs: dict[str, str]  # suspect output key -> the group's output name

    @property
    def compared(self) -> str:
        """The group output a degraded form (or the classifier) compares."""
        return next(iter(self.outputs.values()))


# -- typed results --------------------------------------------------------------------------------
@dataclass
class SuspectSummary:
    path: str
    format: str
    form: str
    queries: int
    probe_set: str
    model: str
    dtype: str
    outputs: list[str]  # the DB outputs the suspect's values were compared with
    printed: str = ""  # how its numbers were printed, when that leaves an interval (not the exact bits)

    @property
    def bitwise(self) -> bool:
        """Raw outputs whose exact bits are known (compared by digest, not as printed intervals)."""
        return self.form == "raw" and not self.printed


@dataclass
class ExactEvidence:
    kind: str  # digest, degraded values, or none
    queries: int
    matched_queries: int  # queries matching at least one DB platform
    common: list[str]  # platforms matching every query
    counts: dict[str, int]  # the ten platforms matching most queries, with how many
    matched: list[str] = field(default_factory=list)  # every platform matching some query, most first
    per_query: list[list[str]] = field(default_factory=list)  # the platforms matching each query
    classes: int = 0  # equivalence classes (bit-identical platforms on the suspect's queries) of the DB
    classes_left: int = 0  # of them, those reproducing every query
    ruled_out: list[list[str]] = field(default_factory=list)  # the others, each as its platforms


@dataclass
class Nearest:
    platform: str
    distance: float


@dataclass
class TargetPosterior:
    top: list[tuple[str, float]]  # best values first, with calibrated probabilities
    values: list[str]  # every value the classifier knows ([] for the platform target)

    @property
    def best(self) -> tuple[str, float]:
        return self.top[0]

    @property
    def confident(self) -> bool:
        return self.top[0][1] >= CONFIDENT


@dataclass
class StatEvidence:
    reference: bool  # whether the float64 reference features were available
    targets: dict[str, TargetPosterior]
    path: str = ""


@dataclass
class Evidence:
    """Everything :func:`decide` looks at."""

    suspect: SuspectSummary
    db_path: str
    db_platforms: list[str]  # platforms of the suspect's (model, probe set)
    db_dtypes: list[str]  # dtypes those platforms returned for the compared output
    exact: ExactEvidence
    nearest: list[Nearest] | None = None
    stats: StatEvidence | None = None
    batch_dependent: list[str] = field(default_factory=list)  # of db_platforms: output depends on batch-mates


@dataclass
class Verdict:
    status: Status
    platforms: list[str]
    strength: Strength
    evidence: list[str]
    attributes: dict[str, str]  # what every named platform shares
    undetermined: dict[str, str] = field(default_factory=dict)  # targets no method can tell here, with why


@dataclass
class MatchReport:
    evidence: Evidence
    verdict: Verdict

    def confident_targets(self) -> dict[str, str]:
        """Classifier targets (not the platform class) that are confident and not undetermined."""
        return confident(self.evidence.stats, self.verdict.undetermined)

    def as_dict(self) -> dict:
        ev = self.evidence
        out: dict[str, Any] = {
            "suspect": asdict(ev.suspect),
            "db": {"path": ev.db_path, "platforms": len(ev.db_platforms), "dtypes": ev.db_dtypes},
            "exact": asdict(ev.exact),
            "verdict": asdict(self.verdict),
        }
        if ev.batch_dependent:
            out["db"]["batch_dependent"] = ev.batch_dependent
        if ev.nearest is not None:
            out["nearest"] = [asdict(n) for n in ev.nearest]
        if ev.stats is not None:
            targets = {}
            for t, p in ev.stats.targets.items():
                d = {
                    "top": [[v, round(q, 4)] for v, q in p.top],
                    "confident": p.confident and t not in self.verdict.undetermined,
                }
                if p.values:
                    d["values"] = p.values
                if t in self.verdict.undetermined:
                    d["note"] = self.verdict.undetermined[t]
                targets[t] = d
            out["classifier"] = {"reference": ev.stats.reference, "targets": targets, "path": ev.stats.path}
        return out


def confident(stats: StatEvidence | None, undetermined: dict[str, str]) -> dict[str, str]:
    """Classifier targets (not the platform class) that are confident, applicable and not undetermined."""
    if stats is None:
        return {}
    return {
        t: p.best[0]
        for t, p in stats.targets.items()
        if t != "platform" and p.confident and t not in undetermined and p.best[0] != NOT_APPLICABLE
    }
