"""The decision: one pure function from evidence to verdict, and what the verdict names."""

from __future__ import annotations

from hspi_onnx.choices import Strength
from hspi_onnx.learn.targets import attribute_values

from .results import (
    CONFIDENT,
    CONSISTENT,
    IDENTIFIED,
    LIKELY,
    MIXED,
    UNKNOWN,
    Evidence,
    MatchReport,
    Verdict,
    confident,
)


# -- the decision ------------------------------------------------------------------------------
def decide(ev: Evidence) -> Verdict:
    """The verdict from the evidence alone (no I/O, no mutation of ``ev``)."""
    s, exact, stats, n = ev.suspect, ev.exact, ev.stats, ev.suspect.queries
    lines: list[str] = []
    undetermined: dict[str, str] = {}
    if s.bitwise and exact.common:
        status, platforms = IDENTIFIED, list(exact.common)
        lines.append(
            f"all {n} outputs are bit-identical to those of {len(platforms)} DB platform(s) "
            f"(digest lookup on {', '.join(s.outputs)}); platforms outside the DB could produce the same bits"
        )
        strength = Strength.CONCLUSIVE if n >= 2 else Strength.STRONG
    elif s.bitwise and exact.matched_queries == n:
        status, platforms = MIXED, list(exact.matched)
        lines.append(
            f"every output matches some DB platform exactly but no platform matches all {n}: "
            "the service answers from several platforms"
        )
        strength = Strength.CONCLUSIVE
    elif not s.bitwise and exact.common and len(exact.common) < len(ev.db_platforms):
        status, platforms = CONSISTENT, list(exact.common)
        what = f"{s.form} outputs" if not s.printed else f"outputs as printed ({s.printed})"
        lines.append(
            f"{len(platforms)} of {len(ev.db_platforms)} DB platforms reproduce all {n} {what} "
            f"of {s.outputs[0]}; the others are excluded"
        )
        strength = Strength.STRONG if len(platforms) <= 3 else Strength.WEAK
    else:
        status, platforms, strength = UNKNOWN, [], Strength.WEAK
        if s.bitwise:
            lines.append(
                f"{exact.matched_queries} of {n} outputs match a DB platform exactly: "
                "this platform is not in the DB as built"
            )
            if s.dtype not in ev.db_dtypes:
                lines.append(
                    f"the outputs are {s.dtype}, a dtype no DB platform returned "
                    f"({', '.join(ev.db_dtypes)}): a server that casts its outputs hides exact identity"
                )
        elif s.form == "softmax" and exact.kind.startswith("none"):
            lines.append("softmax outputs are not compared value for value (a server recomputes them its own way)")
        else:
            lines.append(
                f"no DB platform is excluded by the {s.form} outputs"
                if exact.common
                else f"no DB platform reproduces all {n} {s.form} outputs: this platform is not in the DB as built"
            )
        plat = stats.targets.get("platform") if stats else None
        # the classifier may name a DB class only where the outputs exclude none of the DB's platforms
        uncompared = s.form == "softmax" and exact.kind.startswith("none")
        if plat is not None and plat.confident and (uncompared or (not s.bitwise and exact.common)):
            status, platforms, strength = LIKELY, plat.best[0].split(" | "), Strength.STRONG
            lines.append(f"the classifier gives class {plat.best[0][:80]}... p={plat.best[1]:.4f}")
        elif not s.bitwise and exact.common:
            # every DB platform fits: the platform may well be in the DB; the outputs cannot tell which
            status, platforms, strength = CONSISTENT, list(exact.common), Strength.WEAK
    if stats is not None and status == IDENTIFIED:
        names = _attribute_names(platforms)
        shared = common_attributes(platforms)
        for t, post in stats.targets.items():
            if t == "platform" or t not in names:
                continue
            if t not in shared:
                undetermined[t] = "undetermined: bit-identical DB platforms differ in it"
            elif post.confident and post.best[0] != shared[t]:
                undetermined[t] = (
                    f"contradicted by the exact evidence: every bit-identical DB platform has {t}={shared[t]}"
                )
    if stats is not None:
        conf = confident(stats, undetermined)
        if conf:
            lines.append(
                "classifier, confident (p >= %.2f): " % CONFIDENT + ", ".join(f"{t}={v}" for t, v in conf.items())
            )
    elif status == UNKNOWN:
        lines.append("no classifier given (--classifier): attributes are not estimated")
    if exact.classes > 1:
        lines.append(
            f"the outputs rule out {len(exact.ruled_out)} of the {exact.classes} equivalence classes "
            f"(platforms bit-identical on these {n} probes); {exact.classes_left} left"
        )
    siblings = {bs1_sibling(p) for p in ev.batch_dependent}
    if ev.batch_dependent and (status != IDENTIFIED or siblings & set(platforms)):
        lines.append(
            f"{len(ev.batch_dependent)} DB platform(s) compute a probe differently depending on what shares "
            "its batch (checked at build): a service running them on other batches matches other platforms "
            "or none (a lone request, padded with copies of itself, may match their bs=1 siblings)"
        )
    if ev.nearest:
        lines.append(f"nearest DB platform: {ev.nearest[0].platform} (distance {ev.nearest[0].distance})")
    return Verdict(status, platforms, strength, lines, common_attributes(platforms), undetermined)


def bs1_sibling(label: str) -> str:
    """The platform that differs from ``label`` only in running batches of 1."""
    from hspi_onnx.labels import Platform

    return str(Platform.parse(label).with_knobs(bs="1"))


def names_platform(report: MatchReport, label: str) -> tuple[bool, str | None]:
    """Whether ``report``'s verdict names the platform ``label``: (named, the sibling named in its
    stead). A platform whose outputs depend on what shares its batch (measured at build) that
    serves one request at a time, its batch padded with copies, computes what its bs=1 sibling
    computes: a verdict naming that sibling names it."""
    if label in report.verdict.platforms:
        return True, None
    sibling = bs1_sibling(label)
    if label in report.evidence.batch_dependent and sibling in report.verdict.platforms:
        return True, sibling
    return False, None


def _attribute_names(platforms: list[str]) -> set[str]:
    from hspi_onnx.labels import Platform

    knobs = sorted({k for p in platforms for k, _ in Platform.parse(p).knobs})
    return set(attribute_values(platforms[0], knobs)) if platforms else set()


def common_attributes(platforms: list[str]) -> dict[str, str]:
    """Attributes every one of ``platforms`` shares (what the exact evidence proves)."""
    if not platforms:
        return {}
    from hspi_onnx.labels import Platform

    knobs = sorted({k for p in platforms for k, _ in Platform.parse(p).knobs})
    vals = [attribute_values(p, knobs) for p in platforms]
    return {k: v for k, v in vals[0].items() if all(d[k] == v for d in vals[1:])}
