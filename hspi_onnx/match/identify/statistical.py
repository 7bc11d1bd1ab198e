"""Statistical evidence: the classifier's calibrated probabilities for the queries together."""

from __future__ import annotations

from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.match.suspect import Suspect

from .results import Resolved, StatEvidence, TargetPosterior


def statistical(clf, db: ReferenceDB, res: Resolved, suspect: Suspect, warn) -> StatEvidence:
    from hspi_onnx.learn.features import row_features
    from hspi_onnx.learn.reference import reference_for

    if clf.form != suspect.form:
        raise HspiError(
            f"the classifier was trained for {clf.form} outputs, the suspect has {suspect.form}; "
            f"train one with `hspi train --form {suspect.form}`"
        )
    trained_on = clf.meta.get("output")
    if trained_on and trained_on != res.compared:
        raise HspiError(
            f"the classifier was trained on output {trained_on!r}, the suspect's is {res.compared!r}; "
            f"train one with `hspi train --output-name {res.compared}`"
        )
    if not trained_on and res.compared != res.group.outputs[0]:
        raise HspiError(
            f"the classifier was trained on each model's first output, the suspect's is {res.compared!r}; "
            f"train one with `hspi train --output-name {res.compared}`"
        )
    ref = reference_for(db.manifest(), res.group.model_sha256, res.group.probes_sha256, suspect.ids, res.compared, warn)
    X = row_features(suspect.view(), suspect.form, ref)
    targets = {}
    for target, probs in clf.posterior(X).items():
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        targets[target] = TargetPosterior(
            [(v, float(p)) for v, p in top], [] if target == "platform" else sorted(probs)
        )
    return StatEvidence(ref is not None, targets)
