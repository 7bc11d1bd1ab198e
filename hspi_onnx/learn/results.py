"""Tables of an ``hspi eval`` report: one row per (protocol case, target), ours / svm-bits per n."""

from __future__ import annotations

from collections import defaultdict


def case_name(r: dict) -> str:
    name = r["protocol"]
    if r["holdout"] != "-":
        name += f" −{r['holdout']}"
    if r["form"] != "raw":
        name += f" {r['form']}"
    return name


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _index(report: dict) -> dict:
    by: dict[tuple, dict] = defaultdict(dict)
    for r in report["records"]:
        by[(case_name(r), r["target"])][(r["method"], r["n"])] = r
    return by


def table_rows(report: dict) -> list[dict]:
    queries = sorted({r["n"] for r in report["records"]})
    rows = []
    for (case, target), recs in _index(report).items():
        cells = []
        for n in queries:
            ours, base = recs.get(("catboost", n)), recs.get(("svm-bits", n))
            parts = [_pct(x["accuracy"]) for x in (ours, base) if x is not None]
            cells.append(" / ".join(parts) if parts else "")
        any_rec = next(iter(recs.values()))
        groups = min(r["groups"] for r in recs.values())
        unpred = max(r["unpredictable_groups"] for r in recs.values())
        rows.append({"case": case, "target": target, "cells": cells, "ceiling": _pct(any_rec["ceiling"]),
                     "majority": _pct(any_rec["majority"]),
                     "groups": f"{groups}" + (f" (+{unpred} unpredictable)" if unpred else ""),
                     "unseen": any_rec["unseen_values"]})
    return rows


def losses(report: dict, margin: float = 0.0) -> list[str]:
    """Cells where the baseline beats ours by more than ``margin``."""
    out = []
    for (case, target), recs in _index(report).items():
        for (method, n), r in sorted(recs.items()):
            if method != "catboost":
                continue
            b = recs.get(("svm-bits", n))
            if b and r["accuracy"] is not None and b["accuracy"] is not None and b["accuracy"] > r["accuracy"] + margin:
                out.append(f"{case} {target} n={n}: {_pct(r['accuracy'])} < {_pct(b['accuracy'])}")
    return out


def markdown(report: dict) -> str:
    queries = sorted({r["n"] for r in report["records"]})
    head = ["protocol", "target", *[f"n={n}" for n in queries], "ceiling", "majority", "test groups per n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(report):
        lines.append("| " + " | ".join([row["case"], row["target"], *row["cells"], row["ceiling"], row["majority"],
                                        row["groups"]]) + " |")
    return "\n".join(lines) + "\n"
