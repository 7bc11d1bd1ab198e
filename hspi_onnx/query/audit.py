"""``hspi audit``'s loop: ask a language-model endpoint the chats of a DB probe set, audit the
answers against a claim (:mod:`hspi_onnx.match.audit`) and write the HTML report."""

from __future__ import annotations

from pathlib import Path


def audit_endpoint(
    db,
    probes,
    opts,
    claim: dict[str, str],
    report: Path,
    answers: Path,
    command: list[str] | None = None,
    on_start=lambda total, done: None,
    on_answer=lambda n: None,
    estimate=None,
) -> dict:
    """Ask the endpoint of ``opts`` (a chat plan set: ``hspi_onnx.query.chat.plan_for``) every
    chat of ``probes`` (answers already in ``answers`` are kept, not asked again), audit the
    answers against ``claim`` and write the HTML report; the document, with ``report`` added.
    ``estimate``: as for :func:`~hspi_onnx.match.audit.audit_answers`."""
    from hspi_onnx.match.audit import audit_answers
    from hspi_onnx.match.audit_html import render
    from hspi_onnx.query.client import query
    from hspi_onnx.query.transport import public_url

    query(probes, answers, opts, on_start=on_start, on_answer=on_answer)
    doc = audit_answers(db, answers, claim, public_url(opts.url), command, estimate)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(doc), encoding="utf-8")
    doc["report"] = str(report)
    return doc
