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

Answers of a real server (``hspi query --wire openai`` on a chat probe set) differ in two ways.
A token id may be a list of candidates where the server printed only the token's text and
several ids print the same (any candidate fits). And ``"normalizer": "server"``: the server
computed the log-probabilities itself from its logits, with its own log-sum-exp (llama-cpp-python:
float32 ``(x - max) - log(sum(exp(x - max)))``), so they need not equal the DB's float64 log-softmax
bit for bit. What any such formula keeps is the logits' differences: at each position the
suspect's ``logprob_i - (logit_i - logit_0)`` must be one common value (the normalizer) up to
the float32 roundings of those two subtractions and the printed digits, and that value must be
the DB's own normalizer within 1e-3. The top-k logits of every DB platform are stored, so this is
checked exactly.

A position whose alternatives are an empty list is not compared there (a server returned fewer
than asked: llama-cpp-python keys them by text, so two ids printing the same text collapse into
one entry, carrying the lower one's log-probability).

A server that does not decode greedily (llama.cpp's default repeat penalty, sampling) leaves the
platform's greedy path where its chosen token is not its own top-1: that position's alternatives
are still compared (same prefix), the later ones are not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from hspi_onnx.db.generations import generation_outputs
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.match import printed
from hspi_onnx.match.suspect.core import BadSuspectError, read_bounded

GENERATION_FORMAT = "hspi-generation/1"
MAX_CHATS = 10_000
MAX_POSITIONS = 4096
MAX_TOP = 20
EXACT_DIGITS = 9  # significant digits that pin a float32 exactly
MAX_CANDIDATES = 64  # token ids one printed token text may stand for
NORMALIZERS = ("exact", "server")
NORMALIZER_SLACK = 1e-3  # how far a server's log-sum-exp may be from the DB's float64 one
MAX_TEXT_CHARS = 1 << 16


@dataclass
class GenerationQuery:
    probe_id: int
    tokens: np.ndarray  # (L,) int64; -1 where several ids are candidates (token_sets)
    top_ids: np.ndarray | None = None  # (L, k) int64; -1 where several ids are candidates (top_sets)
    logprobs: np.ndarray | None = None  # (L, k) float64 as printed
    tolerance: np.ndarray | None = None  # (L, k) half a unit in the last printed digit (0: exact)
    token_sets: dict[int, frozenset[int]] = field(default_factory=dict)  # position -> candidate ids
    top_sets: dict[tuple[int, int], frozenset[int]] = field(default_factory=dict)  # (position, rank) -> ids
    skipped: set[int] = field(default_factory=set)  # positions whose alternatives are not compared
    greedy: bool = False  # a greedy answer's tokens without alternatives: the platform's top-1 must be each
    text: str | None = None  # evidence by text: the answer's text, compared with the platform's decoded
    n_tokens: int | None = None  # with text: how many tokens the server says it generated
    likelihood: bool = False  # sampled tokens without alternatives: scored by their likelihood (match/likelihood.py)


@dataclass
class GenerationSuspect:
    path: str
    probes: str  # probe-set name or sha256
    model: str | None
    queries: list[GenerationQuery]
    normalizer: str = "exact"  # "server": log-probabilities normalized by the server, compared by differences

    @property
    def by_text(self) -> bool:
        return any(q.text is not None for q in self.queries)


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

    data = read_bounded(path, "suspect file")
    try:
        lines = [ln for ln in data.decode("utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        fail("is not UTF-8")
    if not lines or len(lines) > MAX_CHATS:
        fail(f"needs 1 to {MAX_CHATS} lines")
    probes = model = None
    normalizer = "exact"
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
        norm = doc.get("normalizer", "exact")
        if norm not in NORMALIZERS or (n > 1 and norm != normalizer):
            fail(f"line {n}: normalizer must be one of {', '.join(NORMALIZERS)}, the same on every line")
        normalizer = norm
        tokens = doc.get("tokens")
        least = 0 if doc.get("tokens_from") == "text" else 1  # text alone may be empty, ids may not
        if not isinstance(tokens, list) or not least <= len(tokens) <= MAX_POSITIONS:
            fail(f"line {n}: tokens must be 1 to {MAX_POSITIONS} token ids")
        q = GenerationQuery(pid, np.zeros(len(tokens), dtype=np.int64))
        if doc.get("tokens_from", "ids") not in ("ids", "text"):
            fail(f"line {n}: tokens_from must be ids or text")
        if doc.get("tokens_from") == "text":  # a server without log-probabilities: its text is the evidence
            text, count = doc.get("text"), doc.get("completion_tokens")
            if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS or doc.get("top_logprobs") is not None:
                fail(f"line {n}: tokens from text need the text (at most {MAX_TEXT_CHARS} characters), no top_logprobs")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= 4096):
                fail(f"line {n}: completion_tokens must be a positive count")
            q.text, q.n_tokens = text, count
        for p, t in enumerate(tokens):
            one, cands = _token(t)
            if one is None and cands is None:
                fail(f"line {n}: tokens must be token ids (or lists of 1 to {MAX_CANDIDATES} candidate ids)")
            q.tokens[p] = one if one is not None else -1
            if cands is not None:
                q.token_sets[p] = cands
        top = doc.get("top_logprobs")
        if top is not None:
            if not isinstance(top, list) or len(top) != len(tokens):
                fail(f"line {n}: top_logprobs needs one list per generated token")
            k = max((len(a) for a in top if isinstance(a, list)), default=0)
            if not 1 <= k <= MAX_TOP:
                fail(f"line {n}: top_logprobs lists 1 to {MAX_TOP} alternatives per position")
            ids = np.zeros((len(top), k), dtype=np.int64)
            lps = np.zeros((len(top), k), dtype=np.float64)
            tol = np.zeros((len(top), k), dtype=np.float64)
            for p, alts in enumerate(top):
                if alts == []:  # the server's alternatives there were unusable: not compared
                    q.skipped.add(p)
                    continue
                if not isinstance(alts, list) or len(alts) != k:
                    fail(f"line {n}, position {p}: every position lists the same number ({k}) of alternatives")
                for j, pair in enumerate(alts):
                    ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], (float, int, str))
                    one, cands = _token(pair[0]) if ok else (None, None)
                    if one is None and cands is None:
                        fail(f"line {n}, position {p}: alternatives are [token_id, logprob] pairs")
                    if cands is not None:
                        q.top_sets[(p, j)] = cands
                    text = printed.text_of(pair[1]) if not isinstance(pair[1], str) else pair[1]
                    try:
                        value, tolerance = float(text), _tolerance(text)
                    except ValueError:
                        fail(f"line {n}, position {p}: logprob {text[:20]!r} is not a number")
                    if not value <= 0.0:  # NaN, positive and infinite log-probabilities are no print
                        fail(f"line {n}, position {p}: logprob {text[:20]} is not a log-probability")
                    ids[p, j], lps[p, j], tol[p, j] = one if one is not None else -1, value, tolerance
            q.top_ids, q.logprobs, q.tolerance = ids, lps, tol
        queries.append(q)
    assert probes is not None
    return GenerationSuspect(str(path), probes, model, queries, normalizer)


def _token(value) -> tuple[int | None, frozenset[int] | None]:
    """(the id, None) of a token id; (None, candidates) of a list of candidate ids (one candidate
    is that id; null: none named, any id); (None, None) when it is neither."""

    def is_id(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31

    if value is None:  # printed so that too many ids could have been it: any id fits
        return None, frozenset()
    if is_id(value):
        return value, None
    if isinstance(value, list) and 1 <= len(value) <= MAX_CANDIDATES and all(is_id(v) for v in value):
        return (value[0], None) if len(value) == 1 else (None, frozenset(value))
    return None, None


def _same_ids(want: np.ndarray, sets: dict, got: np.ndarray, offset=()) -> np.ndarray:
    """Element-wise: the DB's ids ``got`` equal the suspect's ``want`` (or lie in its candidates)."""
    same = want == got
    for key, cands in sets.items():
        at = key if isinstance(key, tuple) else (key,)
        if all(a < d for a, d in zip(at, same.shape)):
            same[at] = not cands or int(got[at]) in cands  # empty: any id
    return same


def consistent(q: GenerationQuery, rows: dict[str, np.ndarray], normalizer: str = "exact", decode=None) -> bool:
    """Whether one platform's generation of the chat (its DB rows: ``tokens``, ``topk_ids``,
    ``topk_logprobs``, and ``topk_logits`` for the server normalizer) could have given ``q``;
    ``decode`` (token ids -> text, special tokens skipped) for text evidence."""
    tokens, top_ids = rows["tokens"].astype(np.int64), rows["topk_ids"]
    if q.text is not None:
        if decode is None:
            raise HspiError("text evidence is compared through the model's tokenizer; none was given")
        live = [int(t) for t in tokens if t >= 0]
        if q.n_tokens is not None:
            if q.n_tokens > len(live):
                return False
            live = live[: q.n_tokens]
        return bool(decode(live) == q.text)
    n = len(q.tokens)
    if n > len(tokens):
        return False
    if q.greedy:  # teacher-forced rows of a greedy answer: the platform would have chosen every token
        return bool(_same_ids(q.tokens, q.token_sets, top_ids[:n, 0].astype(np.int64)).all())
    same = _same_ids(q.tokens, q.token_sets, tokens[:n])
    if not same.all():
        j = int(np.argmin(same))
        # the suspect left the platform's greedy path at j: fine only where the server itself did
        # not take its own top-1 (penalties, sampling); its alternatives at j are still comparable
        if q.top_ids is None or _took_top1(q, j):
            return False
        n = j + 1
    if q.top_ids is None:
        return True
    k = q.top_ids.shape[1]
    use = np.array([p not in q.skipped for p in range(n)], dtype=bool)
    if k > top_ids.shape[1]:
        return False
    if not _same_ids(q.top_ids[:n], q.top_sets, top_ids[:n, :k].astype(np.int64))[use].all():
        return False
    assert q.logprobs is not None and q.tolerance is not None
    if normalizer == "server":
        return _differences_fit(q, rows, n, k, use)
    db = rows["topk_logprobs"][:n, :k].astype(np.float64)
    printed, tol = q.logprobs[:n], q.tolerance[:n]
    # printed with every digit: the float32 it rounds to; else within half a unit of the last digit
    same = np.where(
        tol == 0,
        db == printed.astype(np.float32).astype(np.float64),
        np.abs(db - printed) <= tol * (1 + 1e-9),
    )
    return bool(same[use].all())


def _took_top1(q: GenerationQuery, j: int) -> bool:
    """Whether the suspect's token at ``j`` is (or may be) its own first alternative there."""
    assert q.top_ids is not None
    if j in q.skipped:  # its alternatives there are unknown: taken as greedy (a departure is a mismatch)
        return True
    chosen = q.token_sets.get(j, frozenset([int(q.tokens[j])]))
    first = q.top_sets.get((j, 0), frozenset([int(q.top_ids[j, 0])]))
    return not chosen or not first or bool(chosen & first)


def _differences_fit(q: GenerationQuery, rows: dict[str, np.ndarray], n: int, k: int, use: np.ndarray) -> bool:
    """Server-normalized log-probabilities against a platform's top-k logits: at every position
    one normalizer explains all k values (each ``logprob_i - (logit_i - logit_0)`` within the
    float32 roundings of the two subtractions and the printed digits), and it is the DB's own."""
    if "topk_logits" not in rows:
        return False
    assert q.logprobs is not None and q.tolerance is not None
    logits = rows["topk_logits"][:n, :k].astype(np.float64)[use]
    if not np.isfinite(logits).all():
        return False
    diff = logits - logits[:, :1]
    got = q.logprobs[:n][use]
    slack = q.tolerance[:n][use] * (1 + 1e-9) + _ulp32(got) + _ulp32(diff)
    shift = got - diff
    low, high = (shift - slack).max(axis=1), (shift + slack).min(axis=1)
    if not (low <= high).all():
        return False
    own = rows["topk_logprobs"][:n, 0].astype(np.float64)[use]  # the DB's normalizer, as logprob_0 - 0
    return bool((np.abs(shift[:, 0] - own) <= NORMALIZER_SLACK + slack[:, 0]).all())


def _ulp32(x: np.ndarray) -> np.ndarray:
    """One unit in the last place of float32 at each value's magnitude."""
    return np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)


def suspect_group(db: ReferenceDB, suspect: GenerationSuspect) -> tuple[str, str]:
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


def text_decoder(db: ReferenceDB, model_sha: str):
    """Token ids -> text (special tokens skipped, as servers print an answer) with the tokenizer
    of the DB model's language model (a zoo model, by the name the manifest records)."""
    from hspi_onnx.inputs.chats import tokenizer_for
    from hspi_onnx.inputs.model import resolve_model

    tokenizer = tokenizer_for(resolve_model(db.manifest().models[model_sha].name))

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    return decode


def match_generation(db: ReferenceDB, suspect: GenerationSuspect) -> dict:
    """The DB platforms consistent with every query, their classes, and the verdict."""
    model_sha, probes_sha = suspect_group(db, suspect)
    decode = text_decoder(db, model_sha) if suspect.by_text else None
    ids = [q.probe_id for q in suspect.queries]
    data = generation_outputs(db, model_sha, probes_sha, ids, logits=suspect.normalizer == "server")
    if not data:
        raise HspiError("the reference DB holds no generations of these chats")
    keep = []
    for label, rows in data.items():
        if all(
            consistent(q, {name: v[k] for name, v in rows.items()}, suspect.normalizer, decode)
            for k, q in enumerate(suspect.queries)
        ):
            keep.append(label)
    group, classes, verdict = kept_classes(db, model_sha, probes_sha, keep)
    return report_head(suspect, group) | {
        "evidence": "top_logprobs"
        if all(q.top_ids is not None for q in suspect.queries)
        else ("text (decoded)" if suspect.by_text else "text"),
        "normalizer": suspect.normalizer,
        "ambiguous_tokens": int(sum(len(q.token_sets) + len(q.top_sets) for q in suspect.queries)),
        "verdict": verdict,
        "classes": classes,
        "n_db_platforms": len(data),
    }


def report_head(suspect: GenerationSuspect, group: dict) -> dict:
    """The fields every language-model match report opens with."""
    return {
        "suspect": suspect.path,
        "model": group["model"],
        "probes": group["probes"],
        "queries": len(suspect.queries),
        "tokens": int(sum(len(q.tokens) for q in suspect.queries)),
    }


def kept_classes(db: ReferenceDB, model_sha: str, probes_sha: str, keep: list[str]) -> tuple[dict, list[dict], str]:
    """(the DB group of a model and probe set, the classes of the platforms ``keep`` with those
    platforms, the verdict: identified for one class, ambiguous for several, not in the DB)."""
    from hspi_onnx.db.report import classes as db_classes

    group = next(g for g in db_classes(db) if g["model_sha256"] == model_sha and g["probes_sha256"] == probes_sha)
    class_of = {p: c["id"] for c in group["classes"] for p in c["platforms"]}
    ids = sorted({class_of[label] for label in keep})
    verdict = "identified" if len(ids) == 1 else ("ambiguous" if ids else "not in the DB")
    return group, [{"id": c, "platforms": [p for p in keep if class_of[p] == c]} for c in ids], verdict


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
    that class only; ``top5-server``: every digit, but normalized by the server (compared by the
    logits' differences, as a real server's answers are)."""
    from hspi_onnx.db.generations import is_generation

    out = []
    for g in groups:
        if not is_generation(g["outputs"]):
            continue
        reps = [c["platforms"][0] for c in g["classes"]]
        ids = np.arange(g["n_probes"])
        data = generation_outputs(db, g["model_sha256"], g["probes_sha256"], ids, logits=True)
        modes = [("text", 0, None, "exact")]
        modes += [(f"top{top}" + ("" if d is None else f"@{d}dp"), top, d, "exact") for d in digits]
        modes += [(f"top{top}-server", top, None, "server")]
        rows = []
        for c, rep in zip(g["classes"], reps):
            row = {"class": c["id"], "platform": rep}
            for mode, k, d, norm in modes:
                alone = 0
                for i in range(len(ids)):
                    q = as_query({n: v[i] for n, v in data[rep].items()}, k, int(ids[i]), tokens, d)
                    fits = [other for other in reps if consistent(q, {n: v[i] for n, v in data[other].items()}, norm)]
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
                "modes": [m for m, _, _, _ in modes],
                "rows": rows,
            }
        )
    return out


def write_generation(
    path: str | Path, probes: str, queries: list[GenerationQuery], model: str | None = None, normalizer: str = "exact"
) -> Path:
    """Queries as an ``hspi-generation/1`` file; log-probabilities printed with the decimals their
    tolerance says (all of a float32's digits when exact); candidate ids as lists."""
    path = Path(path)
    path.write_text("".join(generation_line(probes, q, model, normalizer) + "\n" for q in queries))
    return path


def generation_line(
    probes: str, q: GenerationQuery, model: str | None = None, normalizer: str = "exact", **extra
) -> str:
    """One query as an ``hspi-generation/1`` line (``extra`` keys added after the evidence)."""

    def printed(value: float, tol: float) -> str:
        if tol == 0:
            return repr(float(np.float32(value)))
        decimals = max(0, round(-np.log10(2 * tol)))
        return f"{value:.{decimals}f}"

    def token(value: int, cands) -> int | list[int] | None:
        if cands is None:
            return int(value)
        return sorted(cands) or None

    doc: dict = {"format": GENERATION_FORMAT, "probe_set": probes, "probe_id": q.probe_id}
    if model:
        doc["model"] = model
    if normalizer != "exact":
        doc["normalizer"] = normalizer
    doc["tokens"] = [token(t, q.token_sets.get(p)) for p, t in enumerate(q.tokens)]
    if q.top_ids is not None and q.logprobs is not None and q.tolerance is not None:
        doc["top_logprobs"] = [
            []
            if p in q.skipped
            else [
                [token(i, q.top_sets.get((p, j))), _Raw(printed(v, t))]
                for j, (i, v, t) in enumerate(zip(ids, vals, tols))
            ]
            for p, (ids, vals, tols) in enumerate(zip(q.top_ids, q.logprobs, q.tolerance))
        ]
    return _dumps(doc | extra)


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
    if not left and report.get("estimates", {}).get("status") == "estimated":
        return {"claim": claim, **verify_estimates(report["estimates"], claim), "platforms_fitting": []}
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


ESTIMATE_ALPHA = 0.05  # a claimed class this unlikely is rejected; one this likely's complement, accepted


def verify_estimates(estimates: dict, claim: dict[str, str]) -> dict:
    """A claim checked on the estimates of a stack outside the DB: INCONSISTENT when the claimed
    classes of some attribute have probability below :data:`ESTIMATE_ALPHA` together, CONSISTENT
    when those of every claimed attribute have at least 1 - ESTIMATE_ALPHA, else INCONCLUSIVE."""
    from hspi_onnx.learn.llm_attributes import claimed_attributes

    wanted = claimed_attributes(claim, estimates.get("gguf_weights"))
    probs = estimates["attributes"]
    if not wanted:
        return {
            "status": "INCONCLUSIVE",
            "reason": "the stack is not in the DB, and the claim names no precision, weights, compute or kv to estimate",
        }
    p = {a: sum(probs.get(a, {}).get(c, 0.0) for c in allowed) for a, allowed in wanted.items()}
    said = ", ".join(f"P({a} {'/'.join(sorted(wanted[a]))}) = {v:.2f}" for a, v in p.items())
    unchecked = sorted(set(claim) - {"precision", *wanted})
    tail = f"; {', '.join(unchecked)} not checked" if unchecked else ""
    if min(p.values()) < ESTIMATE_ALPHA:
        return {"status": "INCONSISTENT", "reason": f"not in the DB; estimated {said}{tail}", "estimated": p}
    if min(p.values()) >= 1 - ESTIMATE_ALPHA and not unchecked:
        return {"status": "CONSISTENT", "reason": f"not in the DB; estimated {said}", "estimated": p}
    return {"status": "INCONCLUSIVE", "reason": f"not in the DB; estimated {said}{tail}", "estimated": p}


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
