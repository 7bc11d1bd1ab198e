"""Collecting the evidence for a suspect: resolve, exact, statistical."""

from __future__ import annotations

import numpy as np

from hspi_onnx.db.dataset import outputs_at
from hspi_onnx.db.index import DigestIndex, load_index
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.match.printed import FIXED, bits_note
from hspi_onnx.match.suspect import Suspect

from .decide import decide
from .exact import by_print, compare_db, exact_raw, exact_values, rule_out_classes, summarise
from .resolve import resolve
from .results import Evidence, MatchReport, Resolved, SuspectSummary
from .statistical import statistical


def collect(
    suspect: Suspect,
    db: ReferenceDB,
    classifier=None,
    warn=lambda m: None,
    index: DigestIndex | None = None,
    resolved: Resolved | None = None,
) -> Evidence:
    """Every piece of evidence about ``suspect``: exact lookups, nearest platforms, the classifier."""
    index = index or load_index(db)
    res = resolved or resolve(index, suspect)
    j = res.group.output_index(res.compared)
    fixed = suspect.printed is not None and suspect.printed.mode == FIXED
    compared = list(dict.fromkeys(res.outputs.values()))
    summary = SuspectSummary(
        suspect.path,
        suspect.source,
        suspect.form,
        len(suspect),
        res.group.probes_name,
        res.group.model_name,
        suspect.dtype,
        compared[:1] if fixed else compared,
        suspect.printed.description if fixed and suspect.printed is not None else "",
    )
    nearest = None
    outs = outputs_at(db, res.group.model_sha256, res.group.probes_sha256, suspect.ids, res.compared)
    text_nan = suspect.source != "npz" and any(
        np.isnan(np.asarray(v, np.float64)).any() for v in suspect.outputs.values()
    )
    if suspect.form == "raw" and fixed:  # printed with fewer digits than the dtype holds: intervals
        assert suspect.printed is not None  # fixed: it was printed
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
            assert suspect.printed is not None  # by_print checks it
            kind = f"printed values ({bits_note(suspect.printed)})"
        else:
            kind = "degraded values" if suspect.form != "softmax" else "none (softmax is recomputed by the server)"
        exact = summarise(per_query, kind)
    rule_out_classes(exact, outs, suspect.ids)
    stats = statistical(classifier, db, res, suspect, warn) if classifier is not None else None
    flagged = {
        e.platform
        for e in db.manifest().batch_dependent or []
        if e.model_sha256 == res.group.model_sha256 and e.probes_sha256 == res.group.probes_sha256
    }
    return Evidence(
        summary,
        str(db.root),
        res.platforms,
        res.group.dtypes[j],
        exact,
        nearest,
        stats,
        sorted(flagged & set(res.platforms)),
    )


def match(
    suspect: Suspect,
    db: ReferenceDB,
    classifier=None,
    warn=lambda m: None,
    index: DigestIndex | None = None,
    resolved: Resolved | None = None,
) -> MatchReport:
    ev = collect(suspect, db, classifier, warn, index, resolved)
    return MatchReport(ev, decide(ev))
