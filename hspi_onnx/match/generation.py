"""Language-model suspects: what a chat API returned for chats of a DB's prompt set (generated
token ids, optionally the top-k alternatives with their log-probabilities as the server printed
them), matched against every DB platform's generations of the same chats.

A platform is consistent with a query when its greedy tokens start with the suspect's, its top-k
ids at each of those positions equal the suspect's (as many as were returned), and each of its
float32 log-probabilities lies within the printed number's rounding interval (half a unit in its
last printed digit; exact when printed with 9 significant digits or more, which float32 needs).
Text alone (no log-probabilities) is weaker evidence: only classes whose greedy texts differ
part.

The file format, ``hspi-generation/1`` (JSON lines, one per chat)::

    {"format": "hspi-generation/1", "probe_set": "chat-v1-n8", "probe_id": 0, "model": "smollm2",
     "tokens": [1204, 17, ...],
     "top_logprobs": [[[1204, -0.0312], [2, -3.51], ...], ...]}

``top_logprobs`` (optional) holds, per generated position, ``[token_id, logprob]`` pairs, highest
first. Numbers are kept as printed: their decimals set the interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from hspi_onnx.db.generations import generation_outputs
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.match import printed
from hspi_onnx.match.suspect.core import MAX_JSON_BYTES, BadSuspectError

GENERATION_FORMAT = "hspi-generation/1"
MAX_CHATS = 10_000
MAX_POSITIONS = 4096
MAX_TOP = 20
EXACT_DIGITS = 9  # significant digits that pin a float32 exactly


@dataclass
class GenerationQuery:
    probe_id: int
    tokens: np.ndarray  # (L,) int64
    top_ids: np.ndarray | None = None  # (L, k) int64
    logprobs: np.ndarray | None = None  # (L, k) float64 as printed
    tolerance: np.ndarray | None = None  # (L, k) half a unit in the last printed digit (0: exact)


@dataclass
class GenerationSuspect:
    path: str
    probes: str  # probe-set name or sha256
    model: str | None
    queries: list[GenerationQuery]


def is_generation_file(path: str | Path) -> bool:
    """Whether ``path`` starts like an ``hspi-generation/1`` JSON-lines file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return GENERATION_FORMAT.encode() in head.split(b"\n", 1)[0]


def _tolerance(text: str) -> float:
    """Half a unit in the last printed digit of a decimal number (0 when it pins a float32)."""
    digits, exponent = printed.last_digit(text)
    return 0.0 if digits >= EXACT_DIGITS else 0.5 * 10.0**exponent


def read_generation(path: str | Path) -> GenerationSuspect:
    """An ``hspi-generation/1`` file, checked as hostile input."""
    path = Path(path)

    def fail(msg: str) -> NoReturn:
        raise BadSuspectError(f"suspect file {str(path)!r}: {msg}")

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise BadSuspectError(f"cannot read suspect file {str(path)!r}: {exc.strerror or exc}")
    if len(data) > MAX_JSON_BYTES:
        fail(f"is over {MAX_JSON_BYTES >> 20} MiB")
    try:
        lines = [ln for ln in data.decode("utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        fail("is not UTF-8")
    if not lines or len(lines) > MAX_CHATS:
        fail(f"needs 1 to {MAX_CHATS} lines")
    probes = model = None
    budget = [printed.MAX_FLOATS]
    queries: list[GenerationQuery] = []
    seen: set[int] = set()
    for n, line in enumerate(lines, 1):
        try:
            doc = printed.loads(line, budget)  # numbers keep their text: its digits set each interval
        except (ValueError, RecursionError):
            fail(f"line {n} is not JSON")
        if not isinstance(doc, dict) or doc.get("format") != GENERATION_FORMAT:
            fail(f"line {n}: not a {GENERATION_FORMAT} record")
        name = doc.get("probe_set")
        if not isinstance(name, str) or not 0 < len(name) <= 200 or (probes is not None and name != probes):
            fail(f"line {n}: probe_set must name one probe set, the same on every line")
        probes = name
        if doc.get("model") is not None:
            if not isinstance(doc["model"], str) or len(doc["model"]) > 200:
                fail(f"line {n}: model must be a name")
            model = doc["model"]
        pid = doc.get("probe_id")
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid < 1 << 40 or pid in seen:
            fail(f"line {n}: probe_id must be a distinct non-negative integer")
        seen.add(pid)
        tokens = doc.get("tokens")
        if (
            not isinstance(tokens, list)
            or not 1 <= len(tokens) <= MAX_POSITIONS
            or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 1 << 31 for t in tokens)
        ):
            fail(f"line {n}: tokens must be 1 to {MAX_POSITIONS} token ids")
        q = GenerationQuery(pid, np.asarray(tokens, dtype=np.int64))
        top = doc.get("top_logprobs")
        if top is not None:
            if not isinstance(top, list) or len(top) != len(tokens):
                fail(f"line {n}: top_logprobs needs one list per generated token")
            k = len(top[0]) if isinstance(top[0], list) else 0
            if not 1 <= k <= MAX_TOP:
                fail(f"line {n}: top_logprobs lists 1 to {MAX_TOP} alternatives per position")
            ids = np.zeros((len(top), k), dtype=np.int64)
            lps = np.zeros((len(top), k), dtype=np.float64)
            tol = np.zeros((len(top), k), dtype=np.float64)
            for p, alts in enumerate(top):
                if not isinstance(alts, list) or len(alts) != k:
                    fail(f"line {n}, position {p}: every position lists the same number ({k}) of alternatives")
                for j, pair in enumerate(alts):
                    ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)
                    ok = ok and not isinstance(pair[0], bool) and isinstance(pair[1], (float, int, str))
                    if not ok or not 0 <= pair[0] < 1 << 31:
                        fail(f"line {n}, position {p}: alternatives are [token_id, logprob] pairs")
                    text = printed.text_of(pair[1]) if not isinstance(pair[1], str) else pair[1]
                    try:
                        value, tolerance = float(text), _tolerance(text)
                    except ValueError:
                        fail(f"line {n}, position {p}: logprob {text[:20]!r} is not a number")
                    if not value <= 0.0:  # NaN, positive and infinite log-probabilities are no print
                        fail(f"line {n}, position {p}: logprob {text[:20]} is not a log-probability")
                    ids[p, j], lps[p, j], tol[p, j] = pair[0], value, tolerance
            q.top_ids, q.logprobs, q.tolerance = ids, lps, tol
        queries.append(q)
    assert probes is not None
    return GenerationSuspect(str(path), probes, model, queries)


def consistent(q: GenerationQuery, tokens: np.ndarray, top_ids: np.ndarray, logprobs: np.ndarray) -> bool:
    """Whether one platform's generation of the chat (its DB rows) could have given ``q``."""
    n = len(q.tokens)
    if n > len(tokens) or not np.array_equal(tokens[:n].astype(np.int64), q.tokens):
        return False
    if q.top_ids is None:
        return True
    k = q.top_ids.shape[1]
    if k > top_ids.shape[1] or not np.array_equal(top_ids[:n, :k].astype(np.int64), q.top_ids):
        return False
    assert q.logprobs is not None and q.tolerance is not None
    db = logprobs[:n, :k].astype(np.float64)
    exact = q.tolerance == 0
    # printed with every digit: the float32 it rounds to; else within half a unit of the last digit
    same = np.where(
        exact,
        db == q.logprobs.astype(np.float32).astype(np.float64),
        np.abs(db - q.logprobs) <= q.tolerance * (1 + 1e-9),
    )
    return bool(same.all())


def _group(db: ReferenceDB, suspect: GenerationSuspect) -> tuple[str, str]:
    """(model sha256, probe-set sha256) of the DB group the suspect's chats belong to."""
    manifest = db.manifest()
    sets = [sha for sha, p in manifest.probe_sets.items() if suspect.probes in (sha, p.name)]
    if not sets:
        raise HspiError(f"the reference DB has no probe set {suspect.probes!r}")
    models = [
        sha
        for sha, m in manifest.models.items()
        if suspect.model in (None, sha, m.name) and db.shard_dir(sha, sets[0]).is_dir()
    ]
    if len(models) != 1:
        raise HspiError(
            f'the suspect\'s chats ({suspect.probes}) fit {len(models)} DB models; name one with "model" in the file'
        )
    return models[0], sets[0]


def match_generation(db: ReferenceDB, suspect: GenerationSuspect) -> dict:
    """The DB platforms consistent with every query, their classes, and the verdict."""
    from hspi_onnx.db.report import classes as db_classes

    model_sha, probes_sha = _group(db, suspect)
    ids = [q.probe_id for q in suspect.queries]
    data = generation_outputs(db, model_sha, probes_sha, ids)
    if not data:
        raise HspiError("the reference DB holds no generations of these chats")
    keep = []
    for label, rows in data.items():
        if all(
            consistent(q, rows["tokens"][k], rows["topk_ids"][k], rows["topk_logprobs"][k])
            for k, q in enumerate(suspect.queries)
        ):
            keep.append(label)
    group = next(g for g in db_classes(db) if g["model_sha256"] == model_sha and g["probes_sha256"] == probes_sha)
    class_of = {p: c["id"] for c in group["classes"] for p in c["platforms"]}
    classes = sorted({class_of[label] for label in keep})
    verdict = "identified" if len(classes) == 1 else ("ambiguous" if classes else "not in the DB")
    return {
        "suspect": suspect.path,
        "model": group["model"],
        "probes": group["probes"],
        "queries": len(suspect.queries),
        "tokens": int(sum(len(q.tokens) for q in suspect.queries)),
        "evidence": "top_logprobs" if all(q.top_ids is not None for q in suspect.queries) else "text",
        "verdict": verdict,
        "classes": [{"id": c, "platforms": [p for p in keep if class_of[p] == c]} for c in classes],
        "n_db_platforms": len(data),
    }


def as_query(rows: dict[str, np.ndarray], k: int, probe_id: int, tokens: int, digits: int | None) -> GenerationQuery:
    """What one request to a platform returns for one chat: its first ``tokens`` greedy tokens and,
    with ``k`` > 0, their top-``k`` log-probabilities printed with ``digits`` decimals (None: all
    the digits of the float32, as a JSON float prints it)."""
    live = rows["tokens"] >= 0
    n = min(tokens, int(live.sum()))
    q = GenerationQuery(probe_id, rows["tokens"][:n].astype(np.int64))
    if k:
        lp = rows["topk_logprobs"][:n, :k].astype(np.float64)
        if digits is None:
            tol = np.zeros_like(lp)
        else:
            lp = np.round(lp, digits)
            tol = np.full_like(lp, 0.5 * 10.0**-digits)
        q.top_ids, q.logprobs, q.tolerance = rows["topk_ids"][:n, :k].astype(np.int64), lp, tol
    return q


def one_request_table(
    db: ReferenceDB, groups: list[dict], top: int = 5, tokens: int = 16, digits: tuple = (None, 4, 2)
) -> list[dict]:
    """Per language-model group of ``groups`` (``db classes``' report of ``db``): for each class,
    on how many chats ONE request (``tokens`` generated tokens with their top-``top``
    log-probabilities, printed to each of ``digits`` decimals, or text alone) is consistent with
    that class only."""
    from hspi_onnx.db.generations import is_generation

    out = []
    for g in groups:
        if not is_generation(g["outputs"]):
            continue
        reps = [c["platforms"][0] for c in g["classes"]]
        ids = np.arange(g["n_probes"])
        data = generation_outputs(db, g["model_sha256"], g["probes_sha256"], ids)
        modes = [("text", 0, None)] + [(f"top{top}" + ("" if d is None else f"@{d}dp"), top, d) for d in digits]
        rows = []
        for c, rep in zip(g["classes"], reps):
            row = {"class": c["id"], "platform": rep}
            for mode, k, d in modes:
                alone = 0
                for i in range(len(ids)):
                    q = as_query({n: v[i] for n, v in data[rep].items()}, k, int(ids[i]), tokens, d)
                    fits = [
                        other
                        for other in reps
                        if consistent(
                            q, data[other]["tokens"][i], data[other]["topk_ids"][i], data[other]["topk_logprobs"][i]
                        )
                    ]
                    alone += fits == [rep]
                row[mode] = alone
            rows.append(row)
        out.append(
            {
                "model": g["model"],
                "probes": g["probes"],
                "n_probes": len(ids),
                "n_classes": len(reps),
                "tokens": tokens,
                "modes": [m for m, _, _ in modes],
                "rows": rows,
            }
        )
    return out


def write_generation(path: str | Path, probes: str, queries: list[GenerationQuery], model: str | None = None) -> Path:
    """Queries as an ``hspi-generation/1`` file; log-probabilities printed with the decimals their
    tolerance says (all of a float32's digits when exact)."""

    def printed(value: float, tol: float) -> str:
        if tol == 0:
            return repr(float(np.float32(value)))
        decimals = max(0, round(-np.log10(2 * tol)))
        return f"{value:.{decimals}f}"

    lines = []
    for q in queries:
        doc: dict = {"format": GENERATION_FORMAT, "probe_set": probes, "probe_id": q.probe_id}
        if model:
            doc["model"] = model
        doc["tokens"] = [int(t) for t in q.tokens]
        if q.top_ids is not None and q.logprobs is not None and q.tolerance is not None:
            doc["top_logprobs"] = [
                [[int(i), _Raw(printed(v, t))] for i, v, t in zip(ids, vals, tols)]
                for ids, vals, tols in zip(q.top_ids, q.logprobs, q.tolerance)
            ]
        lines.append(_dumps(doc))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


class _Raw(str):
    """A number already printed: written into the JSON as it is."""


def _dumps(doc) -> str:
    if isinstance(doc, _Raw):
        return str(doc)
    if isinstance(doc, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in doc.items()) + "}"
    if isinstance(doc, list):
        return "[" + ", ".join(_dumps(v) for v in doc) + "]"
    return json.dumps(doc)


def verify_generation(report: dict, claim: dict[str, str]) -> dict:
    """Is a language-model suspect consistent with a claim? CONSISTENT when every DB platform the
    evidence leaves has the claimed values, INCONSISTENT when none has them, INCONCLUSIVE when the
    evidence leaves both kinds, or no DB platform at all (a stack outside the DB)."""
    from hspi_onnx.match.claims import satisfies

    left = [p for c in report["classes"] for p in c["platforms"]]
    fit = [p for p in left if satisfies(p, claim)]
    if not left:
        status, why = "INCONCLUSIVE", "no DB platform gives these outputs: the stack is not in the DB"
    elif len(fit) == len(left):
        status, why = (
            "CONSISTENT",
            f"all {len(left)} DB platform(s) consistent with the outputs have the claimed values",
        )
    elif not fit:
        status, why = "INCONSISTENT", f"none of the {len(left)} DB platform(s) consistent with the outputs has them"
    else:
        status, why = "INCONCLUSIVE", f"{len(fit)} of {len(left)} consistent DB platforms have the claimed values"
    return {"claim": claim, "status": status, "reason": why, "platforms_fitting": fit}


def classes_report(db: ReferenceDB) -> list[dict]:
    """``hspi db classes``: the classes of every (model, probe set), and for a language model also
    where each pair of classes parts and what one request identifies (:func:`one_request_table`)."""
    from hspi_onnx.db.report import classes as db_classes

    report = db_classes(db)
    if any("pairs" in g for g in report):
        tables = {(t["model"], t["probes"]): t for t in one_request_table(db, report)}
        for g in report:
            if (g["model"], g["probes"]) in tables:
                g["one_request"] = tables[(g["model"], g["probes"])]
    return report
