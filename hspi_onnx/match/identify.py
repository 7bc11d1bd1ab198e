"""``hspi match``: which platform produced a suspect file — exact evidence first, statistics second.

1. Exact: each raw output's digest is looked up in the DB's digest index (binary search). All
   queries matching one set of platforms -> "identified (exact)", naming every platform whose
   outputs are bit-identical on those probes. Degraded forms (rounded, top-k, argmax) are
   compared with the DB's outputs degraded the same way: platforms agreeing on every query are
   "consistent", which is weaker (many platforms agree once digits are dropped).
2. Statistical: the classifier's calibrated probabilities per target for the n queries together.
3. Open set: without exact identity the platform is not in the DB as built; the report names
   the nearest DB platforms by output distance and the classifier's attributes, each with its
   confidence, and says "unknown platform" unless a degraded form leaves one confident class.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from hspi_onnx.db.dataset import NOT_APPLICABLE, attribute_values, outputs_at
from hspi_onnx.learn.forms import View, degrade
from hspi_onnx.db.index import DigestIndex, IndexGroup, load_index
from hspi_onnx.errors import HspiError
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.match.suspect import BadSuspectError, Suspect

CONFIDENT = 0.9  # calibrated probability above which a classifier answer counts as confident
NEAREST = 5

IDENTIFIED = "identified (exact)"
MIXED = "several platforms (exact)"
CONSISTENT = "consistent (degraded outputs)"
LIKELY = "likely (statistical)"
UNKNOWN = "unknown platform"


@dataclass
class Resolved:
    group_index: int
    group: IndexGroup
    platforms: list[str]


def resolve(index: DigestIndex, suspect: Suspect) -> Resolved:
    """The DB's (model, probe set) the suspect belongs to, with its ids and shape checked."""
    by_probes = [k for k, g in enumerate(index.groups) if suspect.probes in (g.probes_sha256, g.probes_name)]
    if not by_probes:
        known = sorted({g.probes_name for g in index.groups})
        raise BadSuspectError(f"the suspect's probe set {suspect.probes[:64]!r} is not in the DB (it holds {', '.join(known)})")
    cands = by_probes
    if suspect.model:
        cands = [k for k in by_probes if suspect.model in (index.groups[k].model_sha256, index.groups[k].model_name)]
        if not cands:
            raise BadSuspectError(f"the DB holds no outputs of model {suspect.model[:64]!r} on probe set {suspect.probes[:64]!r}")
    width = suspect.view().values.shape[1] if suspect.values is not None else None
    fit = [k for k in cands if width is None or width == int(np.prod(index.groups[k].shape))
           or (suspect.form.startswith("top") and width <= int(np.prod(index.groups[k].shape)))]
    if not fit:
        shapes = ", ".join(f"{index.groups[k].model_name} {index.groups[k].shape}" for k in cands)
        raise BadSuspectError(f"the suspect's outputs ({width} values each) fit no model on this probe set ({shapes})")
    if len(fit) > 1 and suspect.form == "raw":  # the exact bits may tell which model it was
        digests = suspect.digests()
        hit = [k for k in fit if any(index.lookup(k, int(p), d) for p, d in zip(suspect.ids, digests))]
        fit = hit if len(hit) == 1 else fit
    if len(fit) > 1:
        names = ", ".join(index.groups[k].model_name for k in fit)
        raise BadSuspectError(f"several models of the DB fit this suspect ({names}); name the model in the file")
    k = fit[0]
    g = index.groups[k]
    if suspect.values is not None and suspect.form == "raw" and tuple(suspect.values.shape[1:]) != tuple(g.shape):
        raise BadSuspectError(f"the suspect's output shape {list(suspect.values.shape[1:])} differs from the DB's {g.shape}")
    if suspect.index is not None and (suspect.index >= int(np.prod(g.shape))).any():
        raise BadSuspectError(f"the suspect holds indices beyond the model's {int(np.prod(g.shape))} outputs")
    unknown = suspect.ids[~np.isin(suspect.ids, np.asarray(g.ids, dtype=np.int64))]
    if len(unknown):
        raise BadSuspectError(f"probe id {int(unknown[0])} is not in probe set {g.probes_name} as the DB holds it "
                              f"({len(unknown)} unknown ids)")
    return Resolved(k, g, index.platforms_of(k))


# -- exact evidence ----------------------------------------------------------------------------
def exact_raw(index: DigestIndex, res: Resolved, suspect: Suspect) -> list[set[str]]:
    return [index.lookup(res.group_index, int(pid), d) for pid, d in zip(suspect.ids, suspect.digests())]


def _same_view(a: View, b: View, form: str) -> np.ndarray:
    """Per query: does view ``a`` equal view ``b`` (the DB platform degraded the same way)?"""
    ok = np.ones(len(a.values if a.values is not None else a.index), dtype=bool)
    if a.index is not None:
        ok &= (a.index == b.index).all(axis=1)
    if a.values is not None and form != "softmax":
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        if form.startswith("round"):
            ok &= (np.abs(x - y) <= 1e-12 * np.abs(y)).all(axis=1)  # decimal printing may differ in the last bit
        else:
            ok &= (np.asarray(a.values, np.float32) == np.asarray(b.values, np.float32)).all(axis=1)
    return ok


def _distance(a: View, b: View) -> float:
    """Mean distance of two views: log2(1 + |x - y| / ulp32(y)) over values, index mismatches count 24."""
    parts = []
    if a.values is not None:
        x = np.asarray(a.values, np.float64)
        y = np.asarray(b.values, np.float64)
        ulp = np.maximum(np.spacing(np.abs(y).astype(np.float32)).astype(np.float64), 1e-45)
        parts.append(np.log2(1 + np.abs(x - y) / ulp).ravel())
    if a.index is not None:
        parts.append(24.0 * (a.index != b.index).ravel())
    return float(np.concatenate(parts).mean())


def compare_db(db: ReferenceDB, res: Resolved, suspect: Suspect) -> tuple[list[set[str]], list[dict]]:
    """(per query the platforms whose degraded outputs equal the suspect's, the nearest platforms)."""
    outs = outputs_at(db, res.group.model_sha256, res.group.probes_sha256, suspect.ids)
    view = suspect.view()
    per_query: list[set[str]] = [set() for _ in range(len(suspect))]
    dist = []
    for label, arr in outs.items():
        v = degrade(arr, suspect.form)
        if suspect.form != "softmax":
            for q in np.flatnonzero(_same_view(view, v, suspect.form)):
                per_query[q].add(label)
        dist.append((_distance(view, v), label))
    dist.sort()
    near = [{"platform": lab, "distance": round(d, 4)} for d, lab in dist[:NEAREST]]
    return per_query, near


def summarise(per_query: list[set[str]]) -> dict:
    n = len(per_query)
    matched = sum(1 for s in per_query if s)
    common = set.intersection(*per_query) if per_query else set()
    counts = Counter(lab for s in per_query for lab in s)
    return {"queries": n, "matched_queries": matched, "common": sorted(common),
            "counts": dict(counts.most_common(10))}


# -- the classifier ------------------------------------------------------------------------------
def statistical(clf, db: ReferenceDB, res: Resolved, suspect: Suspect, warn) -> dict:
    from hspi_onnx.learn.features import row_features
    from hspi_onnx.learn.reference import reference_for

    if clf.form != suspect.form:
        raise HspiError(f"the classifier was trained for {clf.form} outputs, the suspect has {suspect.form}; "
                        f"train one with `hspi train --form {suspect.form}`")
    ref = reference_for(db.manifest(), res.group.model_sha256, res.group.probes_sha256, suspect.ids, warn)
    X = row_features(suspect.view(), suspect.form, ref)
    out = {}
    for target, probs in clf.posterior(X).items():
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        out[target] = {"top": [[v, round(p, 4)] for v, p in top], "confident": top[0][1] >= CONFIDENT}
        if target != "platform":
            out[target]["values"] = sorted(probs)
    return {"reference": ref is not None, "targets": out}


# -- the verdict ------------------------------------------------------------------------------
def match(suspect: Suspect, db: ReferenceDB, classifier=None, warn=lambda m: None,
          index: DigestIndex | None = None, resolved: Resolved | None = None) -> dict:
    index = index or load_index(db)
    res = resolved or resolve(index, suspect)
    report = {
        "suspect": {"path": suspect.path, "format": suspect.source, "form": suspect.form,
                    "queries": len(suspect), "probe_set": res.group.probes_name, "model": res.group.model_name,
                    "dtype": suspect.dtype},
        "db": {"path": str(db.root), "platforms": len(res.platforms), "dtypes": res.group.dtypes},
    }
    evidence: list[str] = []
    if suspect.form == "raw":
        per_query = exact_raw(index, res, suspect)
        exact = summarise(per_query)
        exact["kind"] = "digest"
        near = None
        if not exact["common"]:
            _, near = compare_db(db, res, suspect)
    else:
        per_query, near = compare_db(db, res, suspect)
        exact = summarise(per_query)
        exact["kind"] = "degraded values" if suspect.form != "softmax" else "none (softmax is recomputed by the server)"
    report["exact"] = exact
    if near is not None:
        report["nearest"] = near
    stats = statistical(classifier, db, res, suspect, warn) if classifier is not None else None
    if stats is not None:
        report["classifier"] = stats
    n = len(suspect)
    if suspect.form == "raw" and exact["common"]:
        status, platforms = IDENTIFIED, exact["common"]
        evidence.append(f"all {n} outputs are bit-identical to those of {len(platforms)} DB platform(s) "
                        f"(digest lookup); platforms outside the DB could produce the same bits")
        strength = "conclusive" if n >= 2 else "strong"
    elif suspect.form == "raw" and exact["matched_queries"] == n:
        status, platforms = MIXED, list(exact["counts"])
        evidence.append(f"every output matches some DB platform exactly but no platform matches all {n}: "
                        "the service answers from several platforms")
        strength = "conclusive"
    elif suspect.form != "raw" and exact["common"] and len(exact["common"]) < len(res.platforms):
        status, platforms = CONSISTENT, exact["common"]
        evidence.append(f"{len(platforms)} of {len(res.platforms)} DB platforms reproduce all {n} {suspect.form} "
                        f"outputs; the others are excluded")
        strength = "strong" if len(platforms) <= 3 else "weak"
    else:
        status, platforms, strength = UNKNOWN, [], "weak"
        if suspect.form == "raw":
            evidence.append(f"{exact['matched_queries']} of {n} outputs match a DB platform exactly: "
                            "this platform is not in the DB as built")
            if suspect.dtype not in res.group.dtypes:
                evidence.append(f"the outputs are {suspect.dtype}, a dtype no DB platform returned "
                                f"({', '.join(res.group.dtypes)}): a server that casts its outputs hides exact identity")
        else:
            evidence.append(f"no DB platform is excluded by the {suspect.form} outputs" if exact["common"]
                            else f"no DB platform reproduces all {n} {suspect.form} outputs")
        plat = (stats or {}).get("targets", {}).get("platform")
        if plat and plat["confident"] and suspect.form != "raw":
            status, platforms, strength = LIKELY, plat["top"][0][0].split(" | "), "strong"
            evidence.append(f"the classifier gives class {plat['top'][0][0][:80]}... p={plat['top'][0][1]}")
    if stats is not None and status == IDENTIFIED:
        shared = common_attributes(platforms)
        for t, v in stats["targets"].items():
            if t != "platform" and t in _attribute_names(platforms) and t not in shared:
                v["confident"] = False  # bit-identical platforms differ in it: no method can tell
                v["note"] = "undetermined: bit-identical DB platforms differ in it"
    if stats is not None:
        conf = [t for t, v in stats["targets"].items()
                if v["confident"] and t != "platform" and v["top"][0][0] != NOT_APPLICABLE]
        if conf:
            evidence.append("classifier, confident (p >= %.2f): " % CONFIDENT
                            + ", ".join(f"{t}={stats['targets'][t]['top'][0][0]}" for t in conf))
    elif status == UNKNOWN:
        evidence.append("no classifier given (--classifier): attributes are not estimated")
    if near:
        evidence.append(f"nearest DB platform: {near[0]['platform']} (distance {near[0]['distance']})")
    report["verdict"] = {"status": status, "platforms": platforms, "strength": strength, "evidence": evidence,
                         "attributes": common_attributes(platforms)}
    return report


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
