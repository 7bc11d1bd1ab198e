"""``hspi match`` / ``hspi verify`` as a library call: a suspect against a DB, through the DB's
digest index (built when it is missing or stale) and an optional classifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def match_suspect(
    suspect,
    db,
    classifier: Path | None = None,
    warn: Callable[[str], None] = lambda m: None,
    on_index: Callable[[int], None] = lambda shards: None,
    on_shard: Callable[[], None] = lambda: None,
):
    """The :class:`~hspi_onnx.match.identify.MatchReport` of ``suspect`` (a loaded suspect) against
    ``db`` (a :class:`~hspi_onnx.db.store.ReferenceDB`). The digest index is read as it is, or
    rebuilt when missing or stale (``on_index(shards)`` first, ``on_shard()`` per shard read);
    ``classifier``: a directory ``hspi train`` wrote, for attributes of unknown platforms and
    degraded outputs, named in the report."""
    from hspi_onnx.db.index import load_index
    from hspi_onnx.errors import HspiError
    from hspi_onnx.learn.classify import load_classifier
    from hspi_onnx.match.identify import match

    try:
        index = load_index(db, rebuild=False)
    except HspiError:
        on_index(len(db.shards()))
        index = load_index(db, on_shard=on_shard)
    clf = load_classifier(classifier) if classifier else None
    report = match(suspect, db, clf, warn=warn, index=index)
    if classifier and report.evidence.stats is not None:
        report.evidence.stats.path = str(classifier)
    return report
