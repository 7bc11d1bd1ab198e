"""What ``hspi eval`` produces, typed: one :class:`EvalRecord` per (case, target, method, n), the
:class:`EvalReport` holding them, and the tables printed from it (ours / svm-bits per n)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields


@dataclass
class EvalRecord:
    """Accuracy of one method for one target on one protocol case at n queries per group."""

    protocol: str
    holdout: str  # held-out runtime/model, or "-"
    form: str
    target: str
    method: str
    n: int
    accuracy: float | None  # None when no test group had a value the training side saw
    groups: int  # test groups scored
    unpredictable_groups: int  # test groups whose true value the training side never saw
    ceiling: float  # best accuracy any method can reach (bit-identical platforms differ in the target)
    majority: float | None  # majority-class rate of the test rows
    unseen_values: list[str]
    train_seconds: float

    @property
    def case(self) -> str:
        name = self.protocol
        if self.holdout != "-":
            name += f" −{self.holdout}"
        if self.form != "raw":
            name += f" {self.form}"
        return name


@dataclass
class CaseTiming:
    protocol: str
    holdout: str
    form: str
    seconds: float


@dataclass
class EvalReport:
    db: str
    db_digest: str
    output: str  # the model output evaluated ("" = each model's first)
    models: list[str]
    platforms: int
    rows: int
    test_probes: dict[str, int]
    train_probes: dict[str, int]
    config: dict
    records: list[EvalRecord]
    confusion: dict  # target -> {"labels": [...], "matrix": [[...]]}, ours on the random split
    confusion_n: int
    timing: list[CaseTiming]
    seconds: float
    plots: list[str] = field(default_factory=list)

    @property
    def queries(self) -> list[int]:
        return sorted({r.n for r in self.records})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw.setdefault("output", "")
        kw["records"] = [EvalRecord(**{f.name: r.get(f.name) for f in fields(EvalRecord)}) for r in d["records"]]
        kw["timing"] = [CaseTiming(**t) for t in d.get("timing", [])]
        return cls(**kw)

    @classmethod
    def merged(cls, reports: list[EvalReport]) -> EvalReport:
        """Several reports of one DB (e.g. one per protocol) as one."""
        first = reports[0]
        return cls(
            **{
                **{f.name: getattr(first, f.name) for f in fields(cls)},
                "records": [r for rep in reports for r in rep.records],
                "timing": [t for rep in reports for t in rep.timing],
                "seconds": sum(rep.seconds for rep in reports),
            }
        )


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _index(report: EvalReport) -> dict:
    by: dict[tuple, dict] = defaultdict(dict)
    for r in report.records:
        by[(r.case, r.target)][(r.method, r.n)] = r
    return by


def table_rows(report: EvalReport) -> list[dict]:
    rows = []
    for (case, target), recs in _index(report).items():
        cells = []
        for n in report.queries:
            ours, base = recs.get(("catboost", n)), recs.get(("svm-bits", n))
            parts = [_pct(x.accuracy) for x in (ours, base) if x is not None]
            cells.append(" / ".join(parts) if parts else "")
        any_rec = next(iter(recs.values()))
        groups = min(r.groups for r in recs.values())
        unpred = max(r.unpredictable_groups for r in recs.values())
        rows.append(
            {
                "case": case,
                "target": target,
                "cells": cells,
                "ceiling": _pct(any_rec.ceiling),
                "majority": _pct(any_rec.majority),
                "groups": f"{groups}" + (f" (+{unpred} unpredictable)" if unpred else ""),
                "unseen": any_rec.unseen_values,
            }
        )
    return rows


def losses(report: EvalReport, margin: float = 0.0) -> list[str]:
    """Cells where the baseline beats ours by more than ``margin``."""
    out = []
    for (case, target), recs in _index(report).items():
        for (method, n), r in sorted(recs.items()):
            if method != "catboost":
                continue
            b = recs.get(("svm-bits", n))
            if b and r.accuracy is not None and b.accuracy is not None and b.accuracy > r.accuracy + margin:
                out.append(f"{case} {target} n={n}: {_pct(r.accuracy)} < {_pct(b.accuracy)}")
    return out


def unpredictable(report: EvalReport) -> list[str]:
    """Held-out targets whose test values the training side never saw (ours, at the first n):
    "protocol-holdout target: values"; no classifier can predict them."""
    first = report.queries[0] if report.queries else None
    return [
        f"{r.protocol}-{r.holdout} {r.target}: {', '.join(r.unseen_values)}"
        for r in report.records
        if r.unseen_values and r.method == "catboost" and r.n == first
    ]


def markdown(report: EvalReport) -> str:
    head = ["protocol", "target", *[f"n={n}" for n in report.queries], "ceiling", "majority", "test groups per n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(report):
        lines.append(
            "| "
            + " | ".join([row["case"], row["target"], *row["cells"], row["ceiling"], row["majority"], row["groups"]])
            + " |"
        )
    return "\n".join(lines) + "\n"
