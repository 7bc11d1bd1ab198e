"""``hspi match``: which platform produced a suspect file — exact evidence first, statistics second.

Evidence is collected first (:func:`collect`), then one pure function decides (:func:`decide`):

1. Exact: each raw output's digest is looked up in the DB's digest index (binary search), for
   every output the suspect holds. All queries matching one set of platforms -> "identified
   (exact)", naming every platform whose outputs are bit-identical on those probes. Degraded
   forms (rounded, top-k, argmax) are compared with the DB's outputs degraded the same way:
   platforms agreeing on every query are "consistent", which is weaker (many platforms agree
   once digits are dropped).
2. Statistical: the classifier's calibrated probabilities per target for the n queries together.
3. Open set: without exact identity the platform is not in the DB as built; the report names
   the nearest DB platforms by output distance and the classifier's attributes, each with its
   confidence, and says "unknown platform" unless a degraded form leaves one confident class.
"""

from __future__ import annotations

from .collect import collect, match
from .decide import bs1_sibling, common_attributes, confident, decide, names_platform
from .exact import EPS32, by_print, compare_db, exact_raw, exact_values, rule_out_classes, summarise
from .resolve import resolve
from .results import (
    CONFIDENT,
    CONSISTENT,
    IDENTIFIED,
    LIKELY,
    MIXED,
    NEAREST,
    STATUSES,
    UNKNOWN,
    Evidence,
    ExactEvidence,
    MatchReport,
    Nearest,
    Resolved,
    StatEvidence,
    SuspectSummary,
    TargetPosterior,
    Verdict,
)
from .statistical import statistical

__all__ = [
    "CONFIDENT",
    "CONSISTENT",
    "EPS32",
    "Evidence",
    "ExactEvidence",
    "IDENTIFIED",
    "LIKELY",
    "MIXED",
    "MatchReport",
    "NEAREST",
    "Nearest",
    "Resolved",
    "STATUSES",
    "StatEvidence",
    "SuspectSummary",
    "TargetPosterior",
    "UNKNOWN",
    "Verdict",
    "bs1_sibling",
    "by_print",
    "collect",
    "common_attributes",
    "compare_db",
    "confident",
    "decide",
    "exact_raw",
    "exact_values",
    "match",
    "names_platform",
    "resolve",
    "rule_out_classes",
    "statistical",
    "summarise",
]
