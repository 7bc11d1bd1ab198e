"""Every verdict branch of ``hspi match`` (:func:`decide`), every path of ``hspi verify --claim``
(:func:`verify`), and the classifier's calibration, on hand-built evidence and synthetic data
(no DB, no runtime)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hspi_onnx.errors import HspiError
from hspi_onnx.learn.classify import (
    TEMPERATURES,
    CatBoostParams,
    Classifier,
    TargetModel,
    combine,
    fit_target,
    fit_temperatures,
    train,
)
from hspi_onnx.learn.examples import Examples
from hspi_onnx.learn.features import NAMES, STORAGE_FEATURES
from hspi_onnx.match.claims import VERDICT_CONSISTENT, VERDICT_INCONCLUSIVE, VERDICT_INCONSISTENT, parse_claim, verify
from hspi_onnx.match.identify import (
    CONFIDENT,
    CONSISTENT,
    IDENTIFIED,
    LIKELY,
    MIXED,
    UNKNOWN,
    Evidence,
    ExactEvidence,
    MatchReport,
    Nearest,
    StatEvidence,
    SuspectSummary,
    TargetPosterior,
    decide,
    summarise,
)

CPU = "cpu:avx512vnni:amd-epyc"
ORT16 = f"onnxruntime@1.32.0/{CPU}/fp16/bs=1,opt=all,threads=1"
ORT32 = f"onnxruntime@1.32.0/{CPU}/fp32/bs=1,opt=all,threads=1"
ORT32_T4 = f"onnxruntime@1.32.0/{CPU}/fp32/bs=1,opt=all,threads=4"
PT32 = f"pytorch@2.13.0/{CPU}/fp32/bs=8,src=onnx"
PT32_BS1 = f"pytorch@2.13.0/{CPU}/fp32/bs=1,src=onnx"
PTBF16 = f"pytorch@2.13.0/{CPU}/bf16/bs=8,src=onnx"
DB = [ORT16, ORT32, ORT32_T4, PT32, PT32_BS1, PTBF16]
NO_CLASSIFIER = "no classifier given (--classifier): attributes are not estimated"


# -- building evidence by hand --------------------------------------------------------------------
def summary(form: str = "raw", n: int = 4, dtype: str = "float32") -> SuspectSummary:
    return SuspectSummary("suspect.json", "plain", form, n, "probes-a", "digits", dtype, ["logits"])


def evidence(
    per_query: list[set[str]],
    form: str = "raw",
    dtype: str = "float32",
    stats=None,
    nearest=None,
    db=DB,
    db_dtypes=("float32",),
) -> Evidence:
    kind = (
        "digest"
        if form == "raw"
        else "none (softmax is recomputed by the server)"
        if form == "softmax"
        else "degraded values"
    )
    return Evidence(
        summary(form, len(per_query), dtype),
        "/db",
        list(db),
        list(db_dtypes),
        summarise(per_query, kind),
        nearest,
        stats,
    )


def post(*top, values=None) -> TargetPosterior:
    return TargetPosterior(list(top), sorted(values if values is not None else [v for v, _ in top]))


def stats(**targets: TargetPosterior) -> StatEvidence:
    return StatEvidence(True, dict(targets), "clf")


def platform_post(klass: str, p: float) -> TargetPosterior:
    return TargetPosterior([(klass, p), ("other", 1 - p)], [])


# -- decide: exact identity ------------------------------------------------------------------------
def test_summarise_exact_lookups():
    assert summarise([{ORT32, PT32}, {ORT32}, set()], "digest") == ExactEvidence(
        "digest", 3, 2, [], {ORT32: 2, PT32: 1}, [ORT32, PT32], [sorted([ORT32, PT32]), [ORT32], []]
    )
    assert summarise([{PT32, ORT32}, {ORT32, PT32}], "degraded values") == ExactEvidence(
        "degraded values", 2, 2, [ORT32, PT32], {ORT32: 2, PT32: 2}, [ORT32, PT32], [[ORT32, PT32]] * 2
    )


def test_identified_from_one_query_is_strong():
    v = decide(evidence([{ORT32, ORT32_T4}]))
    assert (v.status, v.strength) == (IDENTIFIED, "strong")
    assert v.platforms == [ORT32, ORT32_T4]
    assert v.evidence[0].startswith(
        "all 1 outputs are bit-identical to those of 2 DB platform(s) (digest lookup on logits)"
    )
    assert v.attributes == {
        "runtime": "onnxruntime",
        "version": "onnxruntime@1.32.0",
        "device": CPU,
        "precision": "fp32",
        "bs": "1",
        "opt": "all",
    }  # threads differs
    assert v.undetermined == {}
    assert NO_CLASSIFIER not in v.evidence  # only said of unknown platforms


def test_identified_from_two_queries_is_conclusive():
    v = decide(evidence([{PT32, PT32_BS1}, {PT32}]))
    assert (v.status, v.strength, v.platforms) == (IDENTIFIED, "conclusive", [PT32])
    assert v.attributes == {
        "runtime": "pytorch",
        "version": "pytorch@2.13.0",
        "device": CPU,
        "precision": "fp32",
        "bs": "8",
        "src": "onnx",
    }
    assert len(v.evidence) == 1


def test_mixed_when_every_query_matches_but_no_platform_matches_all():
    v = decide(evidence([{ORT32}, {PT32}, {ORT32}, {PT32}]))
    assert (v.status, v.strength) == (MIXED, "conclusive")
    assert v.platforms == [ORT32, PT32]
    assert v.evidence[0] == (
        "every output matches some DB platform exactly but no platform matches all 4: "
        "the service answers from several platforms"
    )
    assert v.attributes == {"device": CPU, "precision": "fp32"}


def test_one_unmatched_query_turns_mixed_into_unknown():
    v = decide(evidence([{ORT32}, {PT32}, set(), {ORT32}]))
    assert (v.status, v.strength, v.platforms) == (UNKNOWN, "weak", [])
    assert v.evidence == [
        "3 of 4 outputs match a DB platform exactly: this platform is not in the DB as built",
        NO_CLASSIFIER,
    ]
    assert v.attributes == {}


def test_raw_unknown_names_nearest_platform():
    near = [Nearest(PT32, 1.5), Nearest(ORT32, 3.25)]
    v = decide(evidence([set(), set()], nearest=near))
    assert v.status == UNKNOWN
    assert v.evidence == [
        "0 of 2 outputs match a DB platform exactly: this platform is not in the DB as built",
        NO_CLASSIFIER,
        f"nearest DB platform: {PT32} (distance 1.5)",
    ]


def test_raw_unknown_with_a_dtype_no_db_platform_returned():
    v = decide(evidence([set(), set()], dtype="float16", db_dtypes=("float32", "bfloat16")))
    assert (v.status, v.platforms) == (UNKNOWN, [])
    assert v.evidence[1] == (
        "the outputs are float16, a dtype no DB platform returned (float32, bfloat16): "
        "a server that casts its outputs hides exact identity"
    )
    same = decide(evidence([set(), set()], dtype="float32", db_dtypes=("float32", "bfloat16")))
    assert not any("a dtype no DB platform returned" in line for line in same.evidence)


def test_raw_unknown_stays_unknown_with_a_confident_classifier():
    st = stats(platform=platform_post(f"{ORT32} | {ORT32_T4}", 0.99), precision=post(("fp32", 0.97), ("fp16", 0.03)))
    v = decide(evidence([set(), {ORT32}], stats=st))
    assert (v.status, v.platforms, v.strength) == (UNKNOWN, [], "weak")
    assert v.evidence == [
        "1 of 2 outputs match a DB platform exactly: this platform is not in the DB as built",
        "classifier, confident (p >= 0.90): precision=fp32",
    ]
    assert NO_CLASSIFIER not in v.evidence


# -- decide: degraded forms ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "common, strength",
    [([ORT32, PT32], "strong"), ([ORT32, ORT32_T4, PT32], "strong"), ([ORT32, ORT32_T4, PT32, PT32_BS1], "weak")],
)
def test_consistent_when_degraded_outputs_exclude_some_platforms(common, strength):
    per_query = [set(common) | {ORT16}, set(common), set(common) | {PTBF16}]
    v = decide(evidence(per_query, form="round4"))
    assert (v.status, v.strength, v.platforms) == (CONSISTENT, strength, sorted(common))
    assert v.evidence == [
        f"{len(common)} of 6 DB platforms reproduce all 3 round4 outputs of logits; the others are excluded"
    ]  # no classifier line: only unknown platforms get it
    assert v.attributes["device"] == CPU and v.attributes["precision"] == "fp32"


def test_degraded_outputs_that_exclude_no_platform_are_consistent_with_all():
    """Issue 15: never "unknown" when the platform may be in the DB: outputs too coarse to tell
    the DB's platforms apart are consistent with every one of them (weak)."""
    v = decide(evidence([set(DB), set(DB)], form="top5"))
    assert (v.status, v.platforms, v.strength) == (CONSISTENT, sorted(DB), "weak")
    assert v.evidence == ["no DB platform is excluded by the top5 outputs"]


def test_degraded_outputs_no_platform_reproduces_are_unknown():
    v = decide(evidence([{ORT32}, {PT32}], form="round3"))
    assert (v.status, v.platforms) == (UNKNOWN, [])
    assert v.evidence == [
        "no DB platform reproduces all 2 round3 outputs: this platform is not in the DB as built",
        NO_CLASSIFIER,
    ]


@pytest.mark.parametrize("p", [CONFIDENT, 0.97])
def test_likely_when_degraded_and_the_platform_class_is_confident(p):
    klass = f"{ORT32} | {ORT32_T4}"
    st = stats(platform=platform_post(klass, p), precision=post(("fp32", 0.99), ("fp16", 0.01)))
    v = decide(evidence([set(DB), set(DB), set(DB)], form="round5", stats=st))
    assert (v.status, v.strength) == (LIKELY, "strong")
    assert v.platforms == [ORT32, ORT32_T4]
    assert v.evidence == [
        "no DB platform is excluded by the round5 outputs",
        f"the classifier gives class {klass[:80]}... p={p:.4f}",
        "classifier, confident (p >= 0.90): precision=fp32",
    ]
    assert v.attributes["precision"] == "fp32" and "threads" not in v.attributes


def test_degraded_platform_class_just_below_confident_is_consistent_with_all():
    st = stats(platform=platform_post(ORT32, 0.8999))
    v = decide(evidence([set(DB), set(DB)], form="round5", stats=st))
    assert (v.status, v.platforms, v.strength) == (CONSISTENT, sorted(DB), "weak")
    assert v.evidence == ["no DB platform is excluded by the round5 outputs"]  # classifier given: no "no classifier"


def test_softmax_is_likely_from_the_classifier_alone():
    """Binary softmax outputs (an .npz) are not compared value for value: the classifier decides."""
    st = stats(platform=platform_post(PTBF16, 0.95))
    v = decide(evidence([set(), set()], form="softmax", stats=st))
    assert (v.status, v.platforms, v.strength) == (LIKELY, [PTBF16], "strong")


def test_printed_softmax_that_no_platform_reproduces_is_unknown_despite_the_classifier():
    """Printed softmax values are compared (as the service's float64 or float32 arithmetic): when
    they exclude every DB platform, a confident classifier may not name one of them."""
    st = stats(platform=platform_post(PTBF16, 0.95))
    ev = evidence([set(), set()], form="softmax", stats=st)
    ev.exact.kind = "printed values (printed as 6 decimals: ...)"
    v = decide(ev)
    assert v.status == UNKNOWN and v.platforms == []


def test_consistent_outranks_a_confident_classifier():
    st = stats(platform=platform_post(PTBF16, 0.99))
    v = decide(evidence([{ORT32, PT32}, {ORT32, PT32}], form="round4", stats=st))
    assert (v.status, v.platforms) == (CONSISTENT, [ORT32, PT32])


# -- decide: undetermined targets, reports -------------------------------------------------------
def _identified_with_classifier() -> Evidence:
    st = stats(
        platform=platform_post(f"{ORT32} | {ORT32_T4}", 0.99),
        precision=post(("fp32", 0.97), ("fp16", 0.03)),
        threads=post(("4", 0.95), ("1", 0.05)),
        runtime=post(("onnxruntime", 0.99), ("pytorch", 0.01)),
        src=post(("-", 0.99), ("onnx", 0.01)),
        opt=post(("all", 0.6), ("-", 0.4)),
    )
    return evidence([{ORT32, ORT32_T4}, {ORT32, ORT32_T4}], stats=st)


def test_identified_platforms_differing_in_a_knob_leave_it_undetermined():
    v = decide(_identified_with_classifier())
    assert (v.status, v.strength, v.platforms) == (IDENTIFIED, "conclusive", [ORT32, ORT32_T4])
    assert v.undetermined == {"threads": "undetermined: bit-identical DB platforms differ in it"}
    assert v.evidence[1] == "classifier, confident (p >= 0.90): precision=fp32, runtime=onnxruntime"
    assert "threads" not in v.attributes


def test_report_confident_targets_and_json():
    ev = _identified_with_classifier()
    report = MatchReport(ev, decide(ev))
    assert report.confident_targets() == {"precision": "fp32", "runtime": "onnxruntime"}
    d = json.loads(json.dumps(report.as_dict()))
    assert d["verdict"]["status"] == IDENTIFIED and d["verdict"]["platforms"] == [ORT32, ORT32_T4]
    assert d["db"] == {"path": "/db", "platforms": 6, "dtypes": ["float32"]}
    assert d["exact"]["common"] == [ORT32, ORT32_T4] and d["exact"]["matched_queries"] == 2
    targets = d["classifier"]["targets"]
    assert targets["threads"] == {
        "top": [["4", 0.95], ["1", 0.05]],
        "confident": False,
        "values": ["1", "4"],
        "note": "undetermined: bit-identical DB platforms differ in it",
    }
    assert targets["precision"]["confident"] is True and "note" not in targets["precision"]
    assert targets["platform"]["confident"] is True and "values" not in targets["platform"]
    assert targets["opt"]["confident"] is False
    assert "nearest" not in d


def test_report_without_classifier_and_with_nearest():
    ev = evidence([set()], nearest=[Nearest(PT32, 2.0)])
    report = MatchReport(ev, decide(ev))
    assert report.confident_targets() == {}
    d = json.loads(json.dumps(report.as_dict()))
    assert d["nearest"] == [{"platform": PT32, "distance": 2.0}] and "classifier" not in d
    assert d["verdict"]["status"] == UNKNOWN and d["verdict"]["undetermined"] == {}


@pytest.mark.parametrize(
    "ev",
    [
        _identified_with_classifier(),
        evidence([{ORT32}, {PT32}]),
        evidence([set(), set()], dtype="float16", nearest=[Nearest(PT32, 1.0)]),
        evidence([{ORT32, PT32}, {ORT32, PT32}], form="round4"),
        evidence([set(DB)], form="round5", stats=stats(platform=platform_post(f"{ORT32} | {PT32}", 0.95))),
    ],
    ids=["identified", "mixed", "unknown", "consistent", "likely"],
)
def test_decide_does_not_mutate_its_evidence(ev):
    before = copy.deepcopy(ev)
    decide(ev)
    assert ev == before


# -- verify: exact evidence ------------------------------------------------------------------------
def report_of(ev: Evidence) -> MatchReport:
    return MatchReport(ev, decide(ev))


def test_claim_consistent_with_an_identified_platform():
    r = verify(report_of(evidence([{ORT32, ORT32_T4}, {ORT32, ORT32_T4}])), {"threads": "4"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_CONSISTENT, 0)
    assert r.evidence == [f"1 platform(s) bit-identical with the suspect satisfy the claim, e.g. {ORT32_T4}"]
    assert r.as_dict() == {"verdict": "CONSISTENT", "claim": {"threads": "4"}, "evidence": r.evidence, "exit_code": 0}


def test_claim_inconsistent_when_db_holds_claimed_platforms_but_none_is_identified():
    r = verify(report_of(evidence([{ORT32}, {ORT32}])), {"precision": "fp16", "runtime": "onnxruntime"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_INCONSISTENT, 1)
    assert r.evidence == ["the DB holds 1 platform(s) satisfying the claim and none is bit-identical with the suspect"]


def test_claim_version_is_the_bare_version_in_exact_evidence():
    assert verify(report_of(evidence([{PT32}])), {"version": "2.13.0"}, DB).verdict == VERDICT_CONSISTENT
    assert verify(report_of(evidence([{PT32}])), {"version": "1.32.0"}, DB).verdict == VERDICT_INCONSISTENT


def test_claim_on_mixed_outputs():
    rep = report_of(evidence([{ORT32}, {PT32}]))
    assert rep.verdict.status == MIXED
    some = verify(rep, {"runtime": "pytorch"}, DB)
    assert (some.verdict, some.exit_code) == (VERDICT_INCONSISTENT, 1)
    assert some.evidence == [
        "the outputs come from several platforms; 1 of 2 queries match only platforms that do "
        "not satisfy the claim (query 0 first)"
    ]
    every = verify(rep, {"precision": "fp32"}, DB)
    assert (every.verdict, every.evidence) == (
        VERDICT_CONSISTENT,
        [
            "the outputs come from several platforms, and every query matches one that satisfies the claim "
            f"(2 such platforms, e.g. {ORT32})"
        ],
    )
    none = verify(rep, {"precision": "bf16"}, DB)
    assert none.verdict == VERDICT_INCONSISTENT


def test_claim_no_db_platform_satisfies_is_inconclusive_without_classifier():
    r = verify(report_of(evidence([{ORT32}, {ORT32}])), {"precision": "int8"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_INCONCLUSIVE, 3)
    assert r.evidence == [
        "the DB holds no platform satisfying the claim; exact evidence cannot judge it",
        "no classifier given: attributes cannot be judged statistically",
    ]


def test_claim_on_degraded_consistent_outputs():
    rep = report_of(evidence([{ORT32, PT32}, {ORT32, PT32}], form="round4"))
    assert rep.verdict.status == CONSISTENT
    ok = verify(rep, {"runtime": "pytorch"}, DB)
    assert ok.verdict == VERDICT_CONSISTENT
    assert ok.evidence == [f"1 platform(s) consistent with the suspect's round4 outputs satisfy the claim, e.g. {PT32}"]
    bad = verify(rep, {"precision": "bf16"}, DB)
    assert bad.verdict == VERDICT_INCONSISTENT
    assert bad.evidence == [
        "the DB holds 1 platform(s) satisfying the claim and none is consistent with the suspect's round4 outputs"
    ]


def test_claim_on_unknown_raw_outputs_without_classifier_is_inconclusive():
    r = verify(report_of(evidence([set(), set()])), {"runtime": "pytorch"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_INCONCLUSIVE, 3)
    assert r.evidence == [
        "none of the 3 DB platforms satisfying the claim reproduces the outputs "
        "(the suspect is not in the DB as built)",
        "no classifier given: attributes cannot be judged statistically",
    ]


def test_unknown_claim_key_raises():
    with pytest.raises(HspiError, match="unknown claim key"):
        verify(report_of(evidence([{ORT32}])), {"quant": "dynamic"}, DB)
    with pytest.raises(HspiError, match="unknown claim key"):
        verify(report_of(evidence([{ORT32}])), {"runtime": "onnxruntime"}, [])


# -- verify: the classifier ------------------------------------------------------------------------
def unknown_with(**targets) -> MatchReport:
    return report_of(evidence([set(), set()], stats=stats(**targets)))


PRECISIONS = ["bf16", "fp16", "fp32"]


def test_statistical_claim_consistent_when_the_classifier_agrees():
    rep = unknown_with(precision=post(("fp16", 0.95), ("fp32", 0.04), values=PRECISIONS))
    r = verify(rep, {"precision": "fp16"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_CONSISTENT, 0)
    assert r.evidence[-1] == "precision=fp16: classifier agrees, p=0.950"


def test_statistical_claim_inconsistent_when_another_value_is_confident():
    rep = unknown_with(precision=post(("fp16", 0.93), ("fp32", 0.05), ("bf16", 0.02), values=PRECISIONS))
    r = verify(rep, {"precision": "fp32"}, DB)
    assert (r.verdict, r.exit_code) == (VERDICT_INCONSISTENT, 1)
    assert r.evidence[-1] == "precision=fp32: classifier says fp16 (p=0.930); the claimed value has p=0.050"


def test_statistical_claim_inconclusive_when_not_confident():
    rep = unknown_with(precision=post(("fp16", 0.85), ("fp32", 0.05), ("bf16", 0.10), values=PRECISIONS))
    for claim in ("fp16", "fp32"):
        r = verify(rep, {"precision": claim}, DB)
        assert (r.verdict, r.exit_code) == (VERDICT_INCONCLUSIVE, 3)
    assert r.evidence[-1] == "precision=fp32: not confident (claimed p=0.050, best fp16 p=0.850)"


def test_statistical_claim_with_a_value_the_classifier_never_saw():
    rep = unknown_with(precision=post(("fp16", 0.99), ("fp32", 0.01), values=PRECISIONS))
    r = verify(rep, {"precision": "int8"}, DB)
    assert r.verdict == VERDICT_INCONCLUSIVE
    assert r.evidence == [
        "the DB holds no platform satisfying the claim",
        "precision=int8: a value the classifier never saw; it cannot judge it",
    ]


def test_statistical_claim_on_a_target_the_classifier_lacks():
    rep = unknown_with(precision=post(("fp16", 0.99), ("fp32", 0.01), values=PRECISIONS))
    r = verify(rep, {"precision": "fp16", "threads": "1"}, DB)
    assert r.verdict == VERDICT_INCONCLUSIVE  # one of two claimed values judged
    assert "threads: the classifier has no target for it" in r.evidence


def test_statistical_claim_one_value_against_outweighs_one_in_favour():
    rep = unknown_with(
        precision=post(("fp16", 0.99), ("fp32", 0.01), values=PRECISIONS),
        runtime=post(("pytorch", 0.97), ("onnxruntime", 0.03)),
    )
    assert verify(rep, {"precision": "fp16", "runtime": "onnxruntime"}, DB).verdict == VERDICT_INCONSISTENT
    assert verify(rep, {"precision": "fp16", "runtime": "pytorch"}, DB).verdict == VERDICT_CONSISTENT


VERSIONS = ["onnxruntime@1.31.0", "onnxruntime@1.32.0", "pytorch@2.12.0", "pytorch@2.13.0"]


def test_statistical_version_claim_matches_runtime_at_version():
    rep = unknown_with(
        version=post(
            ("onnxruntime@1.32.0", 0.96), ("pytorch@2.13.0", 0.03), ("onnxruntime@1.31.0", 0.01), values=VERSIONS
        )
    )
    ok = verify(rep, {"version": "1.32.0"}, DB)
    assert ok.verdict == VERDICT_CONSISTENT
    assert ok.evidence[-1] == "version=onnxruntime@1.32.0: classifier agrees, p=0.960"
    bad = verify(rep, {"version": "2.13.0"}, DB)
    assert bad.verdict == VERDICT_INCONSISTENT
    assert bad.evidence[-1] == (
        "version=pytorch@2.13.0: classifier says onnxruntime@1.32.0 (p=0.960); the claimed value has p=0.030"
    )


def test_statistical_version_claim_outside_the_top_three_is_inconsistent():
    rep = unknown_with(
        version=post(("onnxruntime@1.32.0", 0.96), ("pytorch@2.13.0", 0.02), ("pytorch@2.12.0", 0.015), values=VERSIONS)
    )
    assert verify(rep, {"version": "1.31.0"}, DB).verdict == VERDICT_INCONSISTENT


def test_statistical_claim_on_an_undetermined_target_is_inconclusive():
    db = [ORT32, ORT32_T4, PT32]
    st = stats(threads=post(("8", 0.95), ("1", 0.03), ("4", 0.02)))
    ev = evidence([{ORT32, ORT32_T4}, {ORT32, ORT32_T4}], stats=st, db=db)
    rep = report_of(ev)
    assert rep.verdict.undetermined == {"threads": "undetermined: bit-identical DB platforms differ in it"}
    r = verify(rep, {"threads": "8"}, db)  # no DB platform has threads=8: the classifier decides
    assert r.verdict == VERDICT_INCONCLUSIVE
    assert r.evidence[-1] == "threads=8: not confident (claimed p=0.950, best 8 p=0.950)"


# -- verify: bugs in the exact paths -------------------------------------------------------------
def test_mixed_names_every_platform_that_answered():
    labels = [f"onnxruntime@1.32.0/{CPU}/fp32/bs=1,opt=all,threads={t}" for t in range(1, 13)]
    v = decide(evidence([{lab} for lab in labels], db=labels))
    assert v.status == MIXED
    assert sorted(v.platforms) == sorted(labels)


def test_mixed_claim_explained_by_claim_satisfying_platforms_is_not_inconsistent():
    rep = report_of(evidence([{ORT32, PT32_BS1}, {ORT32_T4}]))  # pytorch bit-identical to ORT32 on query 1
    assert rep.verdict.status == MIXED
    assert verify(rep, {"runtime": "onnxruntime"}, DB).verdict != VERDICT_INCONSISTENT


# -- parse_claim ----------------------------------------------------------------------------------
def test_parse_claim():
    assert parse_claim(" precision=fp16 , runtime=onnxruntime,") == {"precision": "fp16", "runtime": "onnxruntime"}
    assert parse_claim("bs=1,bs=1") == {"bs": "1"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("precision", "not key=value"),
        ("=fp16", "not key=value"),
        ("precision=", "not key=value"),
        ("bs=1,bs=8", "gives bs twice"),
        ("", "the claim is empty"),
        (" , ,", "the claim is empty"),
    ],
)
def test_parse_claim_errors(text, message):
    with pytest.raises(HspiError, match=message):
        parse_claim(text)


# -- calibration ----------------------------------------------------------------------------------
FREE = [i for i, name in enumerate(NAMES) if name not in STORAGE_FEATURES]
CLASSES = np.array(["a", "b", "c"], dtype=object)
FAST = dict(iterations=30, depth=4, threads=1)


def synthetic(kind: str, seed: int, units: int = 6, per: int = 64):
    """(X, y, unit): unit k has class k % 3; ``sep`` puts the class index in four features,
    ``noisy`` adds it to one feature with unit noise, ``noise`` gives features unrelated to it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(units * per, len(NAMES))).astype(np.float32)
    unit = np.repeat(np.arange(units), per)
    c = unit % 3
    if kind == "sep":
        X[:, FREE[:4]] = c[:, None]
    elif kind == "noisy":
        X[:, FREE[0]] = c + rng.normal(size=len(c))
    return X, CLASSES[c], unit


def calibrated(kind: str, seed: int = 0) -> Classifier:
    X, y, _ = synthetic(kind, seed)
    tm = fit_target("t", X, y, CatBoostParams(seed=seed, **FAST))
    Xc, yc, uc = synthetic(kind, seed + 100)
    index = {v: i for i, v in enumerate(tm.classes)}
    tm.temperatures = fit_temperatures(tm.log_proba(Xc), np.array([index[v] for v in yc]), uc, seed)
    return Classifier("raw", {"t": tm})


@pytest.fixture(scope="module")
def classifiers():
    return {kind: calibrated(kind) for kind in ("sep", "noise", "noisy")}


def groups_of(unit: np.ndarray, n: int) -> list[np.ndarray]:
    out = []
    for u in np.unique(unit):
        rows = np.flatnonzero(unit == u)
        out += [rows[k * n : (k + 1) * n] for k in range(len(rows) // n)]
    return out


@pytest.mark.parametrize("kind", ["sep", "noise", "noisy"])
def test_posterior_is_a_distribution_over_the_classes(classifiers, kind):
    X, _, unit = synthetic(kind, 7)
    for n in (1, 8, 32):
        for g in groups_of(unit, n)[::5]:
            p = classifiers[kind].posterior(X[g])["t"]
            assert sorted(p) == ["a", "b", "c"]
            assert all(0.0 <= v <= 1.0 for v in p.values())
            assert sum(p.values()) == pytest.approx(1.0, abs=1e-9)


def test_pure_noise_stays_far_from_confident(classifiers):
    tm = classifiers["noise"].targets["t"]
    assert min(tm.temperatures.values()) > 8.0  # summed noise is tempered hard, at every n
    X, _, unit = synthetic("noise", 8)
    for n in (1, 8, 32):
        tops = [max(classifiers["noise"].posterior(X[g])["t"].values()) for g in groups_of(unit, n)]
        assert max(tops) < 0.6 < CONFIDENT


def test_separable_classes_are_confident_from_one_query(classifiers):
    assert set(classifiers["sep"].targets["t"].temperatures.values()) == {1.0}
    X, y, unit = synthetic("sep", 9)
    for n in (1, 8):
        for g in groups_of(unit, n):
            p = classifiers["sep"].posterior(X[g])["t"]
            best = max(p, key=p.get)
            assert best == y[g[0]] and p[best] >= CONFIDENT


def test_more_queries_sharpen_the_posterior(classifiers):
    clf = classifiers["noisy"]
    temps = clf.targets["t"].temperatures
    assert 1.0 <= temps[1] <= 2.0 and list(temps.values()) == sorted(temps.values()) and temps[32] <= 4.0
    X, y, unit = synthetic("noisy", 10)
    truth_p, right = {}, {}
    for n in (1, 8, 32):
        ps = [(clf.posterior(X[g])["t"], y[g[0]]) for g in groups_of(unit, n)]
        truth_p[n] = np.mean([p[t] for p, t in ps])
        right[n] = np.mean([max(p, key=p.get) == t for p, t in ps])
    assert truth_p[1] < 0.6 < truth_p[8] < truth_p[32]
    assert right[1] < right[8] <= right[32] and right[32] >= 0.9


class FixedProba:
    """Stands in for a CatBoost model: each row of X holds its own class probabilities."""

    def __init__(self, k: int):
        self.classes_ = np.arange(k)

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)


def test_posterior_of_n_queries_is_the_tempered_product():
    tm = TargetModel("t", ["x", "y"], FixedProba(2))
    clf = Classifier("raw", {"t": tm})
    rows = np.array([[0.7, 0.3]] * 3)
    assert clf.posterior(rows[:1])["t"]["x"] == pytest.approx(0.7)
    assert clf.posterior(rows)["t"]["x"] == pytest.approx(0.7**3 / (0.7**3 + 0.3**3))
    tm.temperatures = {3: 3.0}
    assert clf.posterior(rows)["t"]["x"] == pytest.approx(0.7)  # T = n undoes summing n copies
    tm.temperatures = {1: 1.0, 4: 4.0}  # interpolated in log n between fitted counts, linear beyond
    assert tm.temperature(1) == 1.0 and tm.temperature(2) == pytest.approx(2.0) and tm.temperature(4) == 4.0
    assert tm.temperature(8) == pytest.approx(8.0) and tm.temperature(64) == pytest.approx(64.0)
    tm.temperatures = {}
    against = np.array([[0.7, 0.3], [0.7, 0.3], [0.0, 1.0]])  # one query rules x out; clipped at EPS
    p = clf.posterior(against)["t"]
    assert np.isfinite(p["x"]) and 0 < p["x"] < 1e-4
    lp = tm.log_proba(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]]))
    groups = [np.array([0, 1]), np.array([0, 2]), np.array([1, 2, 3]), np.array([0])]
    assert combine(lp, groups).tolist() == [0, 0, 1, 0]


def _fixed_units(
    p_true: float, confused_every: int, units: int = 50, per: int = 64, seed: int = 0, independent: bool = False
):
    """Log-probabilities of two classes per row; unit k has class k % 2. Independent rows are
    drawn from a calibrated Gaussian model; dependent rows repeat one vector per unit, favouring
    the wrong class in every ``confused_every``-th unit."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(units) % 2, per)
    unit = np.repeat(np.arange(units), per)
    if independent:
        mu = 0.5
        x = rng.normal(loc=np.where(truth == 1, mu, -mu))
        l0, l1 = -0.5 * (x + mu) ** 2, -0.5 * (x - mu) ** 2
        m = np.logaddexp(l0, l1)
        return np.stack([l0 - m, l1 - m], axis=1), truth, unit
    favour = np.where(unit % confused_every == 0, 1 - truth, truth)
    p = np.where(favour[:, None] == np.arange(2)[None, :], p_true, 1 - p_true)
    return np.log(p), truth, unit


def _confident_accuracy(log_proba, truth, unit, temperatures, n):
    tm = TargetModel("t", ["0", "1"], FixedProba(2), temperatures)
    clf = Classifier("raw", {"t": tm})
    hits = []
    for g in groups_of(unit, n):
        p = clf.posterior(np.exp(log_proba[g]))["t"]
        best = max(p, key=p.get)
        if p[best] >= CONFIDENT:
            hits.append(best == str(truth[g[0]]))
    return len(hits), (np.mean(hits) if hits else 1.0)


def test_independent_calibrated_queries_keep_temperature_one():
    lp, truth, unit = _fixed_units(0.0, 0, independent=True)
    t = fit_temperatures(lp, truth, unit, seed=0)
    assert sorted(t) == [1, 2, 4, 8, 16, 32] and max(t.values()) <= TEMPERATURES[1]
    confident, accuracy = _confident_accuracy(lp, truth, unit, t, 32)
    assert confident >= 80 and accuracy >= CONFIDENT  # 100 groups of 32


def test_temperature_without_calibration_groups_is_one():
    assert fit_temperatures(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, int), 0) == {}
    assert TargetModel("t", ["x"], None).temperature(32) == 1.0  # uncalibrated: independent draws


def test_dependent_queries_are_not_overconfident_after_calibration():
    lp, truth, unit = _fixed_units(0.8, confused_every=5)  # per query: p=0.8, right 80% of the time
    t = fit_temperatures(lp, truth, unit, seed=0)
    assert t[32] > t[1]  # the dependence shows more, the more queries are summed
    for n in (1, 8, 32, 64):  # 64: beyond the calibrated counts
        confident, accuracy = _confident_accuracy(lp, truth, unit, t, n)
        assert confident == 0 or accuracy >= CONFIDENT, n


# -- calibration through train() ------------------------------------------------------------------
TRAIN_PLATFORMS = [ORT32, ORT16]


def examples(kind: str, seed: int, probes: int = 80) -> Examples:
    rng = np.random.default_rng(seed)
    rows = 2 * probes
    X = rng.normal(size=(rows, len(NAMES))).astype(np.float32)
    unit = np.repeat([0, 1], probes)
    if kind == "sep":
        X[:, FREE[:4]] = unit[:, None]
    label = np.array(TRAIN_PLATFORMS, dtype=object)[unit]
    return Examples(
        "raw",
        X,
        np.zeros((rows, 320), np.uint8),
        label,
        label.copy(),
        np.array(["digits"] * rows, dtype=object),
        np.tile(np.arange(probes), 2),
        unit,
    )


def test_train_holds_out_probes_and_fits_temperatures():
    sep = train(examples("sep", 1), None, CatBoostParams(seed=0, **FAST), calibrate=0.5)
    assert sorted(sep.targets) == ["platform", "precision"]
    assert {v for t in sep.targets.values() for v in t.temperatures.values()} == {1.0}
    assert sep.meta["rows"] == 80 and sep.meta["calibration_rows"] == 80
    noise = train(examples("noise", 0), None, CatBoostParams(seed=0, **FAST), calibrate=0.5)
    assert all(min(t.temperatures.values()) > 8.0 for t in noise.targets.values())
    ex = examples("sep", 2)
    fresh = examples("noise", 3)
    for rows, want in ((np.arange(1), "fp32"), (np.arange(80, 88), "fp16")):
        p = sep.posterior(ex.X[rows])
        assert max(p["precision"], key=p["precision"].get) == want and p["precision"][want] >= CONFIDENT
        assert max(noise.posterior(fresh.X[rows])["precision"].values()) < CONFIDENT


# -- the classifier never overrides exact evidence -------------------------------------------------
def test_a_confident_classifier_contradicting_exact_identity_is_set_aside():
    st = stats(precision=post(("fp16", 0.97), ("fp32", 0.03)), runtime=post(("onnxruntime", 0.99), ("pytorch", 0.01)))
    rep = report_of(evidence([{ORT32, ORT32_T4}, {ORT32, ORT32_T4}], stats=st))
    assert rep.verdict.status == IDENTIFIED
    assert rep.verdict.undetermined == {
        "precision": "contradicted by the exact evidence: every bit-identical DB platform has precision=fp32"
    }
    assert rep.confident_targets() == {"runtime": "onnxruntime"}
    assert verify(rep, {"precision": "fp32"}, DB).verdict == VERDICT_CONSISTENT


def test_degraded_outputs_no_platform_reproduces_are_not_made_likely_by_the_classifier():
    st = stats(platform=platform_post(ORT32, 0.99))
    v = decide(evidence([{ORT32}, {PT32}], form="top5", stats=st))
    assert (v.status, v.platforms) == (UNKNOWN, [])
    v = decide(evidence([set(DB), set(DB)], form="top5", stats=st))  # none excluded: the classifier decides
    assert (v.status, v.platforms) == (LIKELY, [ORT32])


def test_a_verdict_names_a_platform_or_its_bs1_sibling_when_the_platform_is_batch_dependent():
    """What `hspi demo` asks of a verdict (hspi_onnx.match.identify.names_platform)."""
    from types import SimpleNamespace

    from hspi_onnx.match.identify import names_platform

    bs8, bs1 = PT32, PT32_BS1

    def report(named, batch_dependent=()):
        return SimpleNamespace(
            verdict=SimpleNamespace(platforms=list(named)),
            evidence=SimpleNamespace(batch_dependent=list(batch_dependent)),
        )

    assert names_platform(report([bs8]), bs8) == (True, None)
    assert names_platform(report([bs1], [bs8]), bs8) == (True, bs1)  # served alone: computes what bs=1 computes
    assert names_platform(report([bs1]), bs8) == (False, None)  # not batch-dependent: bs=1 is another platform
    assert names_platform(report([]), bs8) == (False, None)
