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

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from hspi_onnx.db.dataset import Group, outputs_at
from hspi_onnx.db.index import DigestIndex, IndexGroup, load_index
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.forms import View, degrade, top_k
from hspi_onnx.learn.targets import NOT_APPLICABLE, attribute_values
from hspi_onnx.choices import Status, Strength
from hspi_onnx.match.printed import FIXED, bits_note
from hspi_onnx.match.suspect import BadSuspectError, Suspect

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

    def to_dict(self) -> dict:
        ev = self.evidence
        out = {"suspect": asdict(ev.suspect), "db": {"path": ev.db_path, "platforms": len(ev.db_platforms),
                                                    "dtypes": ev.db_dtypes},
               "exact": asdict(ev.exact), "verdict": asdict(self.verdict)}
        if ev.batch_dependent:
            out["db"]["batch_dependent"] = ev.batch_dependent
        if ev.nearest is not None:
            out["nearest"] = [asdict(n) for n in ev.nearest]
        if ev.stats is not None:
            targets = {}
            for t, p in ev.stats.targets.items():
                d = {"top": [[v, round(q, 4)] for v, q in p.top], "confident": p.confident and t not in self.verdict.undetermined}
                if p.values:
                    d["values"] = p.values
                if t in self.verdict.undetermined:
                    d["note"] = self.verdict.undetermined[t]
                targets[t] = d
            out["classifier"] = {"reference": ev.stats.reference, "targets": targets, "path": ev.stats.path}
        return out


# -- resolving the suspect against the DB ----------------------------------------------------------
def _width(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def resolve(index: DigestIndex, suspect: Suspect) -> Resolved:
    """The DB's (model, probe set) the suspect belongs to, with its outputs, ids and shapes checked."""
    if not suspect.probes:
        raise BadSuspectError(f"suspect file {suspect.path!r} names no probe set"
                              + (": it carries its own inputs, match it with --replay" if suspect.inputs else ""))
    by_probes = [k for k, g in enumerate(index.groups) if suspect.probes in (g.probes_sha256, g.probes_name)]
    if not by_probes:
        known = sorted({g.probes_name for g in index.groups})
        raise BadSuspectError(f"the suspect's probe set {suspect.probes[:64]!r} is not in the DB (it holds {', '.join(known)})")
    cands = by_probes
    if suspect.model:
        cands = [k for k in by_probes if suspect.model in (index.groups[k].model_sha256, index.groups[k].model_name)]
        if not cands:
            raise BadSuspectError(f"the DB holds no outputs of model {suspect.model[:64]!r} on probe set {suspect.probes[:64]!r}")
    fits, last = {}, BadSuspectError("the suspect fits no model of the DB")
    for k in cands:
        try:
            fits[k] = _map_outputs(index.groups[k], suspect)
        except BadSuspectError as exc:
            last = exc
    if not fits:
        if len(cands) == 1:
            raise last
        shapes = ", ".join(f"{index.groups[k].model_name} {index.groups[k].shapes}" for k in cands)
        raise BadSuspectError(f"the suspect's outputs fit no model on this probe set ({shapes})")
    fit = list(fits)
    if len(fit) > 1 and suspect.form == "raw":  # the exact bits may tell which model it was
        key = next(iter(suspect.outputs))
        digests = suspect.digests(key)
        hit = [k for k in fit if any(index.lookup(k, int(p), d, index.groups[k].output_index(fits[k][key]))
                                     for p, d in zip(suspect.ids, digests))]
        fit = hit if len(hit) == 1 else fit
    if len(fit) > 1:
        names = ", ".join(index.groups[k].model_name for k in fit)
        raise BadSuspectError(f"several models of the DB fit this suspect ({names}); name the model in the file")
    k = fit[0]
    g = index.groups[k]
    unknown = suspect.ids[~np.isin(suspect.ids, np.asarray(g.ids, dtype=np.int64))]
    if len(unknown):
        raise BadSuspectError(f"probe id {int(unknown[0])} is not in probe set {g.probes_name} as the DB holds it "
                              f"({len(unknown)} unknown ids)")
    return Resolved(k, g, index.platforms_of(k), fits[k])


def _map_outputs(g: IndexGroup, suspect: Suspect) -> dict[str, str]:
    """Suspect output key -> group output name; an unnamed output is the one its shape fits
    (the model's first when several fit)."""
    keys = list(suspect.outputs) or [suspect.output]
    out = {}
    for key in keys:
        if key:
            if key not in g.outputs:
                raise BadSuspectError(f"the suspect's output {key[:60]!r} is not an output of {g.model_name} "
                                      f"({', '.join(g.outputs)})")
            name = key
        else:
            values = suspect.outputs.get(key)
            fitting = [o for o, s in zip(g.outputs, g.shapes) if values is None or _fits(values, s, suspect.form)]
            if not fitting:
                raise BadSuspectError(f"the suspect's outputs ({_width(values.shape[1:])} values each) fit no output "
                                      f"of {g.model_name} ({', '.join(f'{o} {s}' for o, s in zip(g.outputs, g.shapes))})")
            name = fitting[0]
        out[key] = name
        shape = g.shapes[g.output_index(name)]
        values = suspect.outputs.get(key)
        if values is not None and not _fits(values, shape, suspect.form):
            raise BadSuspectError(f"the suspect's output shape {list(values.shape[1:])} differs from the DB's "
                                  f"{shape} for output {name}")
        if suspect.index is not None and (suspect.index >= _width(shape)).any():
            raise BadSuspectError(f"the suspect holds indices beyond the model's {_width(shape)} outputs")
    return out


def _fits(values: np.ndarray, shape, form: str) -> bool:
    if form == "raw":
        return tuple(values.shape[1:]) == tuple(shape)
    width = _width(values.shape[1:])
    partial = form in ("logprobs", "softmax") or top_k(form) is not None  # top-k of the values
    return width == _width(shape) or (partial and width <= _width(shape))


# -- evidence ---------------------------------------------------------------------------------
def exact_raw(index: DigestIndex, res: Resolved, suspect: Suspect) -> list[set[str]]:
    """Per query: the platforms whose every output the suspect holds is bit-identical."""
    per_query: list[set[str]] | None = None
    for key, name in res.outputs.items():
        j = res.group.output_index(name)
        hits = [index.lookup(res.group_index, int(pid), d, j) for pid, d in zip(suspect.ids, suspect.digests(key))]
        per_query = hits if per_query is None else [a & b for a, b in zip(per_query, hits)]
    return per_query or []


def exact_values(db: ReferenceDB, res: Resolved, suspect: Suspect) -> list[set[str]]:
    """Per query: the platforms whose every output the suspect holds has its dtype and equal
    values, any NaN equal to any NaN. For text suspects: a printed NaN has lost its payload
    bits (x86 kernels return a negative quiet NaN, JSON readers make a positive one)."""
    per_query: list[set[str]] | None = None
    for key, name in res.outputs.items():
        mine = suspect.outputs[key].reshape(len(suspect), -1)
        hits: list[set[str]] = [set() for _ in range(len(suspect))]
        for label, arr in outputs_at(db, res.group.model_sha256, res.group.probes_sha256, suspect.ids, name).items():
            if arr.dtype != mine.dtype:
                continue
            theirs = arr.reshape(len(arr), -1)
            x, y = mine.astype(np.float64), theirs.astype(np.float64)
            same = (mine.view(np.uint8).reshape(len(mine), -1) == theirs.view(np.uint8).reshape(len(theirs), -1)).all(axis=1)
            same |= ((x == y) & (np.signbit(x) == np.signbit(y)) | (np.isnan(x) & np.isnan(y))).all(axis=1)
            for q in np.flatnonzero(same):
                hits[q].add(label)
        per_query = hits if per_query is None else [a & b for a, b in zip(per_query, hits)]
    return per_query or []


def _same_view(a: View, b: View, form: str) -> np.ndarray:
    """Per query: does view ``a`` equal view ``b`` (the DB platform degraded the same way)?"""
    ok = np.ones(len(a.values if a.values is not None else a.index), dtype=bool)
    if a.index is not None:
        ok &= (a.index == b.index).all(axis=1)
    if a.values is not None and form != "softmax":
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # infinities equal, NaN as NaN
        with np.errstate(invalid="ignore"):
            near = np.abs(x - y) <= 1e-12 * np.abs(y)  # decimal printing may differ in the last bit
        if form.startswith("round"):
            ok &= (same | near).all(axis=1)
        elif form == "logprobs":  # float64 as printed (up to the last bit), or cast to float32 and printed
            ok &= (same | near | (x == y.astype(np.float32))).all(axis=1)
        else:
            x32, y32 = np.asarray(a.values, np.float32), np.asarray(b.values, np.float32)
            ok &= ((x32 == y32) | (np.isnan(x32) & np.isnan(y32))).all(axis=1)
    return ok


def _distance(a: View, b: View) -> float:
    """Mean distance of two views: log2(1 + |x - y| / ulp32(y)) over values, index mismatches count 24."""
    parts = []
    if a.values is not None:
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        ulp = np.maximum(np.spacing(np.abs(y).astype(np.float32)).astype(np.float64), 1e-45)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.log2(1 + np.abs(x - y) / ulp)
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # inf == inf, NaN as NaN
        parts.append(np.where(same, 0.0, np.where(np.isfinite(d), d, 24.0)).ravel())
    if a.index is not None:
        parts.append(24.0 * (a.index != b.index).ravel())
    return float(np.concatenate(parts).mean())


EPS32 = 2.0 ** -24


@np.errstate(invalid="ignore", over="ignore", divide="ignore")  # rows holding inf or NaN
def _printed_candidates(arr: np.ndarray, form: str, k: int | None) -> list[tuple[View, np.ndarray | float]]:
    """What a service could have held for ``arr`` in ``form`` before printing, each with the
    absolute error its own arithmetic may add: the values themselves (the printing rounds them);
    softmax and log-softmax computed in float64 (exact, or cast to float32), or in float32
    arithmetic, whose result may lie anywhere within a few float32 roundings of each step
    (bounded, since frameworks order the steps differently)."""
    from hspi_onnx.forms import log_softmax, top_indices

    rows = np.asarray(arr).reshape(len(arr), -1).astype(np.float64)
    spread = rows - rows.max(axis=1, keepdims=True)
    if form in ("softmax", "logprobs"):
        lp = log_softmax(rows)
        log_sum = np.log(np.exp(spread).sum(axis=1, keepdims=True))
        if form == "softmax":
            p = np.exp(lp)
            slack = p * EPS32 * (8 + 2 * np.abs(spread))
            if k is None:
                return [(View(p), 0.0), (View(p.astype(np.float32)), 0.0), (View(p), slack)]
            idx = top_indices(p, min(k, p.shape[1]))  # the top k probabilities, with their indices
            top, sl = np.take_along_axis(p, idx, axis=1), np.take_along_axis(slack, idx, axis=1)
            return [(View(top, idx), 0.0), (View(top.astype(np.float32), idx), 0.0), (View(top, idx), sl)]
        idx = top_indices(lp, min(k or 5, lp.shape[1]))
        at = lambda x: np.take_along_axis(np.broadcast_to(x, lp.shape), idx, axis=1)  # noqa: E731
        slack = at(8 * EPS32 * (np.abs(rows) + np.abs(rows.max(axis=1, keepdims=True)) + np.abs(log_sum)))
        top = np.take_along_axis(lp, idx, axis=1)
        return [(View(top, idx), 0.0), (View(top.astype(np.float32), idx), 0.0), (View(top, idx), slack)]
    if form.startswith("round"):
        return [(View(rows), 0.0)]
    return [(degrade(arr, form, k), 0.0)]


def _within_print(view: View, candidates: list, precision) -> np.ndarray:
    """Per query: does some candidate (within its arithmetic's error) print as the suspect's
    numbers, and give its indices?"""
    ok = np.zeros(len(view.values), dtype=bool)
    for c, slack in candidates:
        x = np.asarray(c.values, np.float64)
        with np.errstate(invalid="ignore"):
            within = (x + slack >= precision.lo) & (x - slack <= precision.hi)
        within |= np.isnan(x) & np.isnan(precision.lo)  # NaN prints as NaN whatever its bits
        hit = within.reshape(len(x), -1).all(axis=1)
        if view.index is not None:
            hit &= (view.index == c.index).all(axis=1)
        ok |= hit
    return ok


def by_print(suspect: Suspect) -> bool:
    """Are the suspect's values compared as printed numbers? Fixed digits stand for intervals;
    printed softmax values (any printing) are the service's own arithmetic, tried in float64 and
    float32 (:mod:`hspi_onnx.match.printed`)."""
    return (suspect.printed is not None and suspect.values is not None
            and (suspect.printed.mode == FIXED or suspect.form == "softmax"))


def compare_db(outs: dict[str, np.ndarray], suspect: Suspect) -> tuple[list[set[str]], list[Nearest]]:
    """(per query the platforms whose degraded outputs equal the suspect's, the nearest platforms),
    given every DB platform's compared output on the suspect's probes (``outs``)."""
    view = suspect.view()
    k = None if view.index is None else view.index.shape[1]
    fixed = by_print(suspect)
    per_query: list[set[str]] = [set() for _ in range(len(suspect))]
    dist = []
    for label, arr in outs.items():
        v = degrade(arr, suspect.form, k)
        if fixed:
            same = _within_print(view, _printed_candidates(arr, suspect.form, k), suspect.printed)
        else:
            same = _same_view(view, v, suspect.form) if suspect.form != "softmax" else np.zeros(len(suspect), bool)
        for q in np.flatnonzero(same):
            per_query[q].add(label)
        dist.append((_distance(view, v), label))
    dist.sort()
    return per_query, [Nearest(lab, round(d, 4)) for d, lab in dist[:NEAREST]]


def summarise(per_query: list[set[str]], kind: str) -> ExactEvidence:
    common = set.intersection(*per_query) if per_query else set()
    counts = Counter(lab for s in per_query for lab in s)
    ranked = sorted(counts, key=lambda lab: (-counts[lab], lab))
    return ExactEvidence(kind, len(per_query), sum(1 for s in per_query if s), sorted(common),
                         {lab: counts[lab] for lab in ranked[:10]}, ranked, [sorted(s) for s in per_query])


def rule_out_classes(exact: ExactEvidence, outs: dict[str, np.ndarray], ids: np.ndarray) -> None:
    """Fill in which equivalence classes of the DB (platforms bit-identical on the suspect's
    queries, compared output) the suspect rules out: those that fail to reproduce some query."""
    keys = Group("", "", "", "", ids, outs).classes()
    classes = sorted(set(keys.values()))
    left = {keys[p] for p in exact.common if p in keys}
    exact.classes, exact.classes_left = len(classes), len(left)
    exact.ruled_out = [k.split(" | ") for k in classes if k not in left]


def statistical(clf, db: ReferenceDB, res: Resolved, suspect: Suspect, warn) -> StatEvidence:
    from hspi_onnx.learn.features import row_features
    from hspi_onnx.learn.reference import reference_for

    if clf.form != suspect.form:
        raise HspiError(f"the classifier was trained for {clf.form} outputs, the suspect has {suspect.form}; "
                        f"train one with `hspi train --form {suspect.form}`")
    trained_on = clf.meta.get("output")
    if trained_on and trained_on != res.compared:
        raise HspiError(f"the classifier was trained on output {trained_on!r}, the suspect's is {res.compared!r}; "
                        f"train one with `hspi train --output-name {res.compared}`")
    if not trained_on and res.compared != res.group.outputs[0]:
        raise HspiError(f"the classifier was trained on each model's first output, the suspect's is {res.compared!r}; "
                        f"train one with `hspi train --output-name {res.compared}`")
    ref = reference_for(db.manifest(), res.group.model_sha256, res.group.probes_sha256, suspect.ids, res.compared, warn)
    X = row_features(suspect.view(), suspect.form, ref)
    targets = {}
    for target, probs in clf.posterior(X).items():
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        targets[target] = TargetPosterior([(v, float(p)) for v, p in top], [] if target == "platform" else sorted(probs))
    return StatEvidence(ref is not None, targets)


def collect(suspect: Suspect, db: ReferenceDB, classifier=None, warn=lambda m: None,
            index: DigestIndex | None = None, resolved: Resolved | None = None) -> Evidence:
    """Every piece of evidence about ``suspect``: exact lookups, nearest platforms, the classifier."""
    index = index or load_index(db)
    res = resolved or resolve(index, suspect)
    j = res.group.output_index(res.compared)
    fixed = suspect.printed is not None and suspect.printed.mode == FIXED
    compared = list(dict.fromkeys(res.outputs.values()))
    summary = SuspectSummary(suspect.path, suspect.source, suspect.form, len(suspect), res.group.probes_name,
                             res.group.model_name, suspect.dtype, compared[:1] if fixed else compared,
                             suspect.printed.description if fixed else "")
    nearest = None
    outs = outputs_at(db, res.group.model_sha256, res.group.probes_sha256, suspect.ids, res.compared)
    text_nan = suspect.source != "npz" and any(np.isnan(np.asarray(v, np.float64)).any() for v in suspect.outputs.values())
    if suspect.form == "raw" and fixed:  # printed with fewer digits than the dtype holds: intervals
        per_query, nearest = compare_db(outs, suspect)
        exact = summarise(per_query, f"printed values ({bits_note(suspect.printed)})")
    elif suspect.form == "raw" and text_nan:
        exact = summarise(exact_values(db, res, suspect), "values (a printed NaN matches any NaN)")
        if not exact.common:
            _, nearest = compare_db(outs, suspect)
    elif suspect.form == "raw":
        exact = summarise(exact_raw(index, res, suspect), "digest")
        if not exact.common:
            _, nearest = compare_db(outs, suspect)
    else:
        per_query, nearest = compare_db(outs, suspect)
        if by_print(suspect):
            kind = f"printed values ({bits_note(suspect.printed)})"
        else:
            kind = "degraded values" if suspect.form != "softmax" else "none (softmax is recomputed by the server)"
        exact = summarise(per_query, kind)
    rule_out_classes(exact, outs, suspect.ids)
    stats = statistical(classifier, db, res, suspect, warn) if classifier is not None else None
    manifest = db.manifest()
    flagged = {e["platform"] for e in manifest.get("batch_dependent", [])
               if e.get("model_sha256") == res.group.model_sha256 and e.get("probes_sha256") == res.group.probes_sha256}
    return Evidence(summary, str(db.root), res.platforms, res.group.dtypes[j], exact, nearest, stats,
                    sorted(flagged & set(res.platforms)))


# -- the decision ------------------------------------------------------------------------------
def confident(stats: StatEvidence | None, undetermined: dict[str, str]) -> dict[str, str]:
    """Classifier targets (not the platform class) that are confident, applicable and not undetermined."""
    if stats is None:
        return {}
    return {t: p.best[0] for t, p in stats.targets.items()
            if t != "platform" and p.confident and t not in undetermined and p.best[0] != NOT_APPLICABLE}


def decide(ev: Evidence) -> Verdict:
    """The verdict from the evidence alone (no I/O, no mutation of ``ev``)."""
    s, exact, stats, n = ev.suspect, ev.exact, ev.stats, ev.suspect.queries
    lines: list[str] = []
    undetermined: dict[str, str] = {}
    if s.bitwise and exact.common:
        status, platforms = IDENTIFIED, list(exact.common)
        lines.append(f"all {n} outputs are bit-identical to those of {len(platforms)} DB platform(s) "
                     f"(digest lookup on {', '.join(s.outputs)}); platforms outside the DB could produce the same bits")
        strength = Strength.CONCLUSIVE if n >= 2 else Strength.STRONG
    elif s.bitwise and exact.matched_queries == n:
        status, platforms = MIXED, list(exact.matched)
        lines.append(f"every output matches some DB platform exactly but no platform matches all {n}: "
                     "the service answers from several platforms")
        strength = Strength.CONCLUSIVE
    elif not s.bitwise and exact.common and len(exact.common) < len(ev.db_platforms):
        status, platforms = CONSISTENT, list(exact.common)
        what = f"{s.form} outputs" if not s.printed else f"outputs as printed ({s.printed})"
        lines.append(f"{len(platforms)} of {len(ev.db_platforms)} DB platforms reproduce all {n} {what} "
                     f"of {s.outputs[0]}; the others are excluded")
        strength = Strength.STRONG if len(platforms) <= 3 else Strength.WEAK
    else:
        status, platforms, strength = UNKNOWN, [], Strength.WEAK
        if s.bitwise:
            lines.append(f"{exact.matched_queries} of {n} outputs match a DB platform exactly: "
                         "this platform is not in the DB as built")
            if s.dtype not in ev.db_dtypes:
                lines.append(f"the outputs are {s.dtype}, a dtype no DB platform returned "
                             f"({', '.join(ev.db_dtypes)}): a server that casts its outputs hides exact identity")
        elif s.form == "softmax" and exact.kind.startswith("none"):
            lines.append("softmax outputs are not compared value for value (a server recomputes them its own way)")
        else:
            lines.append(f"no DB platform is excluded by the {s.form} outputs" if exact.common
                         else f"no DB platform reproduces all {n} {s.form} outputs: this platform is not in the DB "
                              "as built")
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
                undetermined[t] = (f"contradicted by the exact evidence: every bit-identical DB platform has "
                                   f"{t}={shared[t]}")
    if stats is not None:
        conf = confident(stats, undetermined)
        if conf:
            lines.append("classifier, confident (p >= %.2f): " % CONFIDENT + ", ".join(f"{t}={v}" for t, v in conf.items()))
    elif status == UNKNOWN:
        lines.append("no classifier given (--classifier): attributes are not estimated")
    if exact.classes > 1:
        lines.append(f"the outputs rule out {len(exact.ruled_out)} of the {exact.classes} equivalence classes "
                     f"(platforms bit-identical on these {n} probes); {exact.classes_left} left")
    siblings = {bs1_sibling(p) for p in ev.batch_dependent}
    if ev.batch_dependent and (status != IDENTIFIED or siblings & set(platforms)):
        lines.append(f"{len(ev.batch_dependent)} DB platform(s) compute a probe differently depending on what shares "
                     "its batch (checked at build): a service running them on other batches matches other platforms "
                     "or none (a lone request, padded with copies of itself, may match their bs=1 siblings)")
    if ev.nearest:
        lines.append(f"nearest DB platform: {ev.nearest[0].platform} (distance {ev.nearest[0].distance})")
    return Verdict(status, platforms, strength, lines, common_attributes(platforms), undetermined)


def bs1_sibling(label: str) -> str:
    """The platform that differs from ``label`` only in running batches of 1."""
    from hspi_onnx.labels import Platform

    return str(Platform.parse(label).with_knobs(bs="1"))


def names_platform(report: "MatchReport", label: str) -> tuple[bool, str | None]:
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


def match(suspect: Suspect, db: ReferenceDB, classifier=None, warn=lambda m: None,
          index: DigestIndex | None = None, resolved: Resolved | None = None) -> MatchReport:
    ev = collect(suspect, db, classifier, warn, index, resolved)
    return MatchReport(ev, decide(ev))


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
