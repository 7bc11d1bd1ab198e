"""The closed sets of words the library and the command line share, one enum each: output forms,
classifier methods, evaluation protocols, match verdict statuses, claim verdicts. Each member is
a ``str`` equal to its value, so JSON, comparisons with plain strings and printing are unchanged;
the command line builds its choices from these (``hspi --help`` imports nothing heavy: this
module imports only the standard library).
"""

from __future__ import annotations

import enum
from typing import cast

try:
    from enum import StrEnum
except ImportError:  # Python 3.10

    class StrEnum(str, enum.Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return str.__str__(self)

        def __format__(self, spec: str) -> str:
            return str.__format__(str(self), spec)


class Form(StrEnum):
    """How a service prints a model's outputs (:mod:`hspi_onnx.forms`); ``topK`` for any K is
    accepted beside these."""

    RAW = "raw"
    ROUND3 = "round3"
    ROUND4 = "round4"
    ROUND5 = "round5"
    ROUND6 = "round6"
    ROUND7 = "round7"
    SOFTMAX = "softmax"
    TOP1 = "top1"
    TOP5 = "top5"
    ARGMAX = "argmax"
    LOGPROBS = "logprobs"


class Method(StrEnum):
    CATBOOST = "catboost"  # ours: features -> CatBoost
    SVM_BITS = "svm-bits"  # the paper's baseline: IEEE-754 bits -> StandardScaler -> LinearSVC


class EvalProtocol(StrEnum):
    SPLIT = "split"  # random probe split
    LORO = "loro"  # leave one runtime out
    LOMO = "lomo"  # leave one model out
    DEGRADED = "degraded"  # outputs printed in another form


class Status(StrEnum):
    """What ``hspi match`` concludes (:mod:`hspi_onnx.match.identify`)."""

    IDENTIFIED = "identified (exact)"
    MIXED = "several platforms (exact)"
    CONSISTENT = "consistent (degraded outputs)"
    LIKELY = "likely (statistical)"
    UNKNOWN = "unknown platform"


class Strength(StrEnum):
    """How strong a match verdict's evidence is."""

    CONCLUSIVE = "conclusive"
    STRONG = "strong"
    WEAK = "weak"


class ClaimVerdict(StrEnum):
    """What ``hspi verify`` concludes about a claim (:mod:`hspi_onnx.match.claims`), with its exit code."""

    CONSISTENT = "CONSISTENT"
    INCONSISTENT = "INCONSISTENT"
    INCONCLUSIVE = "INCONCLUSIVE"

    @property
    def exit_code(self) -> int:
        return {"CONSISTENT": 0, "INCONSISTENT": 1, "INCONCLUSIVE": 3}[self.value]


def cli_choices(name: str, members) -> type[enum.Enum]:
    """An enum whose member names are its values (what typer shows as choices: ``<raw|round3|...>``)
    for a subset of one of the enums above."""
    return cast(type[enum.Enum], enum.Enum(name, {str(m): str(m) for m in members}, type=str))
