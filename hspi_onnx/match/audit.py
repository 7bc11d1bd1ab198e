"""``hspi audit``: a language-model endpoint's answers (``hspi query --wire openai`` on a chat
probe set of the DB) matched and checked against a claim, as one document: the verdict and its
strength, the evidence per request, each request's per-token deviation from the claimed stack and
from the best-matching one (:mod:`hspi_onnx.match.deviation`), the request log and the versions.
``hspi audit --json`` prints it; :mod:`hspi_onnx.match.audit_html` renders it as the report.
"""

from __future__ import annotations

import json
import platform as host_platform
import sys
import time
from pathlib import Path

from hspi_onnx.db.generations import generation_outputs
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.match.claims import satisfies
from hspi_onnx.match.deviation import Deviation, deviation, rank_key
from hspi_onnx.match.generation import (
    GenerationSuspect,
    kept_classes,
    match_generation,
    read_generation,
    suspect_group,
    verify_generation,
)

AUDIT_FORMAT = "hspi-audit/1"
MAX_TEXT_SHOWN = 2000


def _deviations(suspect: GenerationSuspect, data: dict) -> dict[str, list[Deviation]]:
    return {
        label: [deviation(q, {name: v[k] for name, v in rows.items()}) for k, q in enumerate(suspect.queries)]
        for label, rows in data.items()
    }


def _request_log(path: Path) -> list[dict]:
    """Per answer line what the request met and what the server said about itself (the file is
    the one ``read_generation`` has just checked)."""
    log = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        params: dict = doc["parameters"] if isinstance(doc.get("parameters"), dict) else {}
        met: dict = params["hspi_query"] if isinstance(params.get("hspi_query"), dict) else {}
        response: dict = doc["response"] if isinstance(doc.get("response"), dict) else {}
        text = doc.get("text") if isinstance(doc.get("text"), str) else None
        log.append(
            {
                "probe_id": doc.get("probe_id"),
                "tokens": len(doc.get("tokens") or []),
                "evidence": "text" if doc.get("tokens_from") == "text" else "top_logprobs",
                "finish_reason": doc.get("finish_reason"),
                "text": text[:MAX_TEXT_SHOWN] if text is not None else None,
                "status": met.get("status"),
                "latency_s": met.get("latency_s"),
                "attempts": met.get("attempts"),
                "stream": params.get("stream"),
                "server": {k: response[k] for k in ("id", "model", "system_fingerprint", "usage") if k in response},
            }
        )
    return log


def _strength(status: str, report: dict, claimed: list[str], devs: dict[str, list[Deviation]], best: str | None):
    """What the verdict rests on, in numbers: how many requests and tokens, how many DB classes the
    answers leave, and for the claimed stack how many requests differ from it and where first."""
    n_classes = report["n_classes"]
    left = len(report["classes"])
    out = {
        "requests": report["queries"],
        "tokens": report["tokens"],
        "evidence": report["evidence"],
        "db_classes": n_classes,
        "classes_left": left,
        "classes_excluded": n_classes - left,
        "claimed_platforms_in_db": len(claimed),
    }
    if claimed:
        nearest = min(claimed, key=lambda p: rank_key(devs[p]))
        firsts = [d.first_difference() for d in devs[nearest]]
        out |= {
            "nearest_claimed": nearest,
            "requests_differing_from_claimed": sum(f is not None for f in firsts),
            "first_difference_positions": [f for f in firsts if f is not None],
        }
    if status == "CONSISTENT":
        out["summary"] = (
            f"the answers equal the claimed stack on all {report['tokens']} tokens of {report['queries']} "
            f"request(s) ({report['evidence']}); {n_classes - left} of the DB's {n_classes} classes excluded"
        )
    elif status == "INCONSISTENT":
        named = f"; they identify {best}" if report["verdict"] == "identified" and best else ""
        out["summary"] = (
            f"{out.get('requests_differing_from_claimed', report['queries'])} of {report['queries']} request(s) "
            f"differ from every claimed DB platform ({len(claimed)}){named}"
        )
    else:
        out["summary"] = "the evidence does not decide the claim"
    return out


def audit_answers(
    db: ReferenceDB,
    answers: str | Path,
    claim: dict[str, str],
    url: str | None = None,
    command: list[str] | None = None,
    estimate=None,
) -> dict:
    """The audit document of an answers file (``hspi-generation/1``) against ``claim``;
    ``estimate(report, suspect)``: the estimates of a stack no DB class fits, or None
    (cli/estimates.py runs the reference it needs)."""
    from hspi_onnx import __version__

    answers = Path(answers)
    suspect = read_generation(answers)
    report = match_generation(db, suspect)
    estimates = estimate(report, suspect) if estimate is not None else None
    if estimates is not None:
        report["estimates"] = estimates
    checked = verify_generation(report, claim)
    model_sha, probes_sha = suspect_group(db, suspect)
    data = generation_outputs(db, model_sha, probes_sha, [q.probe_id for q in suspect.queries])
    claimed = [label for label in data if satisfies(label, claim)]
    fitting = [p for c in report["classes"] for p in c["platforms"]]
    devs = _deviations(suspect, data)
    best = fitting[0] if fitting else min(data, key=lambda p: rank_key(devs[p]))
    group, _, _ = kept_classes(db, model_sha, probes_sha, [])
    report["n_classes"] = len(group["classes"])
    strength = _strength(checked["status"], report, claimed, devs, best)
    nearest = strength.get("nearest_claimed")
    if not claimed:
        checked["reason"] += "; the DB holds no platform with the claimed values (build them to compare)"
    per_request = []
    for k, q in enumerate(suspect.queries):
        per_request.append(
            {
                "probe_id": q.probe_id,
                "tokens": len(q.tokens) if q.text is None else q.n_tokens,
                "best": devs[best][k].as_dict(),
                "claimed": devs[nearest][k].as_dict() if nearest else None,
                "fits_best": best in fitting,
                "fits_claimed": bool(nearest) and nearest in fitting,
            }
        )
    versions = {
        "hspi_onnx": __version__,
        "python": sys.version.split()[0],
        "host": f"{host_platform.system()} {host_platform.machine()}",
    }
    return {
        "format": AUDIT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": url,
        "command": command,
        "claim": claim,
        "verdict": checked["status"],
        "reason": checked["reason"],
        "identified": report["verdict"] == "identified",
        "best_match": best,
        "best_match_fits": best in fitting,
        "nearest_claimed": nearest,
        "claimed_platforms": claimed,
        "strength": strength,
        "requests": per_request,
        "request_log": _request_log(answers),
        "match": report,
        "answers": str(answers),
        "db": str(db.root),
        "versions": versions,
    }


def exit_code(status: str) -> int:
    return {"CONSISTENT": 0, "INCONSISTENT": 1}.get(status, 3)
