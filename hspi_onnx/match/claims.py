"""``hspi verify --claim``: is a suspect file consistent with what its provider claims?

A claim is ``key=value`` pairs: runtime, precision, device, version and any knob (``bs``,
``opt``, ``threads``, ...). Verdicts, strongest evidence first:

* exact identity: CONSISTENT when a platform bit-identical to the suspect satisfies the claim;
  INCONSISTENT when the DB holds platforms satisfying the claim and none is bit-identical.
* degraded outputs: INCONSISTENT when every DB platform satisfying the claim is excluded by
  the outputs; otherwise the classifier decides.
* classifier: INCONSISTENT when a claimed value has probability <= 1 - CONFIDENT while another
  value is confident; CONSISTENT when every claimed value is confident; else INCONCLUSIVE.
"""

from __future__ import annotations

from dataclasses import dataclass

from hspi_onnx.choices import ClaimVerdict
from hspi_onnx.errors import HspiError
from hspi_onnx.labels import Platform
from hspi_onnx.learn.llm_attributes import llm_attributes
from hspi_onnx.learn.targets import attribute_values
from hspi_onnx.match.identify import CONFIDENT, IDENTIFIED, MIXED, MatchReport
from hspi_onnx.match.identify import CONSISTENT as DEGRADED_OK

VERDICT_CONSISTENT, VERDICT_INCONSISTENT, VERDICT_INCONCLUSIVE = ClaimVerdict  # hspi_onnx/choices.py
EXIT_CODES = {v: v.exit_code for v in ClaimVerdict}


def parse_claim(text: str) -> dict[str, str]:
    claim: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise HspiError(f"claim part {part[:40]!r} is not key=value (e.g. precision=fp16,runtime=onnxruntime)")
        if key in claim and claim[key] != value:
            raise HspiError(f"claim gives {key} twice")
        claim[key] = value
    if not claim:
        raise HspiError("the claim is empty; give key=value pairs, e.g. precision=fp16,runtime=onnxruntime")
    return claim


def _values(label: str) -> dict[str, str]:
    p = Platform.parse(label)
    v = attribute_values(label, [k for k, _ in p.knobs])
    v["version"] = p.version  # a claim names the version alone; the target pairs it with the runtime
    v.update(llm_attributes(label) or {})  # a language model's weights, compute and kv (claimable too)
    return v


def satisfies(label: str, claim: dict[str, str]) -> bool:
    """Whether platform ``label`` has every claimed value; a version is claimed bare (1.32.0) or
    with its runtime (onnxruntime@1.32.0)."""
    v = _values(label)
    runtime_version = f"{v.get('runtime')}@{v.get('version')}"
    return all(v.get(k) == want or (k == "version" and want == runtime_version) for k, want in claim.items())


@dataclass
class ClaimResult:
    verdict: ClaimVerdict
    claim: dict[str, str]
    evidence: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "claim": self.claim, "evidence": self.evidence, "exit_code": self.exit_code}


def verify(report: MatchReport, claim: dict[str, str], db_platforms: list[str] | None = None) -> ClaimResult:
    """The verdict for ``claim`` given a match report and the DB's platforms of the suspect's
    model (default: those the report compared with)."""
    if db_platforms is None:
        db_platforms = report.evidence.db_platforms
    keys = set().union(*(_values(p) for p in db_platforms)) if db_platforms else set()
    unknown = sorted(set(claim) - keys)
    if unknown:
        raise HspiError(f"unknown claim key(s) {', '.join(unknown)}; this DB knows {', '.join(sorted(keys))}")
    claimed = [p for p in db_platforms if satisfies(p, claim)]
    verdict = report.verdict
    status, evidence = VERDICT_INCONCLUSIVE, []
    if verdict.status in (IDENTIFIED, MIXED, DEGRADED_OK):
        hits = [p for p in verdict.platforms if satisfies(p, claim)]
        what = (
            "bit-identical with the suspect"
            if verdict.status != DEGRADED_OK
            else f"consistent with the suspect's {report.evidence.suspect.form} outputs"
        )
        if hits:
            unexplained = (
                [
                    q
                    for q, plats in enumerate(report.evidence.exact.per_query)
                    if not any(satisfies(p, claim) for p in plats)
                ]
                if verdict.status == MIXED
                else []
            )
            if unexplained:
                status = VERDICT_INCONSISTENT
                evidence.append(
                    f"the outputs come from several platforms; {len(unexplained)} of "
                    f"{report.evidence.exact.queries} queries match only platforms that do not satisfy "
                    f"the claim (query {unexplained[0]} first)"
                )
            elif verdict.status == MIXED:
                status = VERDICT_CONSISTENT
                evidence.append(
                    f"the outputs come from several platforms, and every query matches one that "
                    f"satisfies the claim ({len(hits)} such platforms, e.g. {hits[0]})"
                )
            else:
                status = VERDICT_CONSISTENT
                evidence.append(f"{len(hits)} platform(s) {what} satisfy the claim, e.g. {hits[0]}")
        elif claimed:
            status = VERDICT_INCONSISTENT
            evidence.append(f"the DB holds {len(claimed)} platform(s) satisfying the claim and none is {what}")
        else:
            evidence.append("the DB holds no platform satisfying the claim; exact evidence cannot judge it")
    else:
        if claimed and report.evidence.suspect.bitwise:
            evidence.append(
                f"none of the {len(claimed)} DB platforms satisfying the claim reproduces the outputs "
                "(the suspect is not in the DB as built)"
            )
        elif not claimed:
            evidence.append("the DB holds no platform satisfying the claim")
    if status == VERDICT_INCONCLUSIVE and report.evidence.stats is not None:
        status, more = _statistical(report.evidence.stats.targets, claim, set(report.verdict.undetermined))
        evidence += more
    elif status == VERDICT_INCONCLUSIVE:
        evidence.append("no classifier given: attributes cannot be judged statistically")
    return ClaimResult(status, claim, evidence)


def _statistical(targets: dict, claim: dict[str, str], undetermined: set[str]) -> tuple[ClaimVerdict, list[str]]:
    evidence, judged, against = [], 0, 0
    for key, want in claim.items():
        t = targets.get(key)
        if key == "version" and t is not None and "@" not in want:  # a bare version: the runtime's
            runtime = claim.get("runtime")
            matches = [
                v for v in t.values if v.endswith("@" + want) and (runtime is None or v.startswith(runtime + "@"))
            ]
            want = matches[0] if len(matches) == 1 else want
        if t is None:
            evidence.append(f"{key}: the classifier has no target for it")
            continue
        if want not in t.values:
            evidence.append(f"{key}={want}: a value the classifier never saw; it cannot judge it")
            continue
        probs = dict(t.top)
        p_claim = probs.get(want, 0.0)
        best, p_best = t.best
        confident = t.confident and key not in undetermined
        if best == want and confident:
            judged += 1
            evidence.append(f"{key}={want}: classifier agrees, p={p_best:.3f}")
        elif best != want and confident and p_claim <= 1 - CONFIDENT + 1e-9:
            against += 1
            evidence.append(
                f"{key}={want}: classifier says {best} (p={p_best:.3f}); the claimed value has p={p_claim:.3f}"
            )
        else:
            evidence.append(f"{key}={want}: not confident (claimed p={p_claim:.3f}, best {best} p={p_best:.3f})")
    if against:
        return VERDICT_INCONSISTENT, evidence
    if judged == len(claim):
        return VERDICT_CONSISTENT, evidence
    return VERDICT_INCONCLUSIVE, evidence
