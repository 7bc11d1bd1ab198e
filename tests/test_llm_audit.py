"""Auditing a language-model server: printed tokens mapped back to ids, server-normalized
log-probabilities matched by the logits' differences, servers that leave the greedy path; and a
real llama-cpp-python OpenAI-compatible server on loopback, queried and identified."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import hspi
from hspi_onnx.match.generation import GenerationQuery, consistent, generation_line, read_generation


def _rows(logits: np.ndarray, tokens=None) -> dict:
    """DB rows of one chat from top-k logits (float32): ids 10, 11, ... by rank, the DB's float64
    log-softmax over these k plus a tail of mass, rounded once."""
    logits = np.asarray(logits, dtype=np.float32)
    wide = logits.astype(np.float64)
    lse = np.log(np.exp(wide).sum(axis=1, keepdims=True) + 3.0)
    n, k = logits.shape
    ids = np.tile(np.arange(10, 10 + k, dtype=np.int32), (n, 1))
    return {
        "tokens": np.asarray(tokens if tokens is not None else ids[:, 0], dtype=np.int32),
        "topk_ids": ids,
        "topk_logits": logits,
        "topk_logprobs": (wide - lse).astype(np.float32),
    }


def _llama_cpp_logprobs(rows: dict) -> np.ndarray:
    """What llama-cpp-python prints: float32 (x - max) - log(sum(exp(x - max))), with the DB's
    normalizer standing in for the sum over the whole vocabulary."""
    logits = rows["topk_logits"]
    shifted = np.subtract(logits, logits[:, :1], dtype=np.float32)
    norm = (logits[:, :1].astype(np.float64) - rows["topk_logprobs"][:, :1].astype(np.float64)).astype(np.float32)
    return (shifted - (norm - logits[:, :1])).astype(np.float32)


def _query(rows: dict, values: np.ndarray, k: int = 3) -> GenerationQuery:
    n = len(rows["tokens"])
    return GenerationQuery(
        0, rows["tokens"].astype(np.int64), rows["topk_ids"][:, :k].astype(np.int64), values[:, :k], np.zeros((n, k))
    )


def test_server_normalized_logprobs_match_by_differences():
    rows = _rows([[5.25, 4.0, 1.5, -2.0], [3.0, 2.75, 0.5, 0.25]])
    served = _llama_cpp_logprobs(rows).astype(np.float64)
    q = _query(rows, served)
    assert not consistent(q, rows)  # not the DB's float64 log-softmax bit for bit
    assert consistent(q, rows, "server")
    other = dict(rows, topk_logits=rows["topk_logits"] + np.float32([[0, 0, 1e-5, 0], [0, 0, 0, 0]]))
    assert not consistent(q, other, "server")  # one logit moved: the differences no longer fit
    shifted = dict(rows, topk_logprobs=rows["topk_logprobs"] - np.float32(0.01))
    assert not consistent(q, shifted, "server")  # another normalizer than the DB's
    assert not consistent(q, {k: v for k, v in rows.items() if k != "topk_logits"}, "server")


def test_a_server_leaving_the_greedy_path_is_compared_up_to_where_it_left():
    rows = _rows([[5.0, 4.0, 1.0], [3.0, 2.0, 1.0], [4.0, 1.0, 0.0]], tokens=[10, 10, 10])
    served = _llama_cpp_logprobs(rows).astype(np.float64)
    q = _query(rows, served)
    q.tokens = np.array([10, 11, 12])  # took its second choice at position 1 (a repeat penalty)
    assert consistent(q, rows, "server")  # positions 0 and 1 compared, 2 came from another prefix
    q.top_ids[1, 0], q.top_ids[1, 1] = 11, 10  # ... but had it ranked 11 first, it was greedy there
    assert not consistent(q, rows, "server")
    greedy_elsewhere = _query(rows, served)
    greedy_elsewhere.tokens = np.array([10, 12, 10])  # 12 is not among its own top-1 either
    assert consistent(greedy_elsewhere, rows, "server")
    text_only = GenerationQuery(0, np.array([10, 11]))
    assert not consistent(text_only, rows)  # without alternatives a departure is a mismatch


def test_candidate_ids_round_trip_and_match(tmp_path):
    rows = _rows([[5.0, 4.0, 1.0]])
    q = _query(rows, rows["topk_logprobs"].astype(np.float64))
    q.tokens = np.array([-1])
    q.token_sets = {0: frozenset({10, 99})}
    q.top_ids[0, 2] = -1
    q.top_sets = {(0, 2): frozenset()}  # printed so that any id could be it
    path = tmp_path / "g.jsonl"
    path.write_text(generation_line("set", q, "m", "server") + "\n")
    doc = json.loads(path.read_text())
    assert doc["tokens"] == [[10, 99]] and doc["top_logprobs"][0][2][0] is None and doc["normalizer"] == "server"
    back = read_generation(path)
    assert back.normalizer == "server" and back.queries[0].token_sets == {0: frozenset({10, 99})}
    assert consistent(back.queries[0], rows, "server")
    miss = dict(rows, tokens=np.array([98], dtype=np.int32))
    assert not consistent(back.queries[0], miss, "server")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"tokens": [[]]}, "tokens must be token ids"),
        ({"tokens": [list(range(65))]}, "tokens must be token ids"),
        ({"tokens": [True]}, "tokens must be token ids"),
        ({"normalizer": "guess"}, "normalizer must be one of"),
    ],
)
def test_hostile_candidates_and_normalizers_are_refused(tmp_path, bad, message):
    from hspi_onnx.match.suspect.core import BadSuspectError

    doc = {"format": "hspi-generation/1", "probe_set": "s", "probe_id": 0, "tokens": [1]} | bad
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    with pytest.raises(BadSuspectError, match=message):
        read_generation(path)


class _Tok:
    """A byte-level BPE tokenizer's surface as TokenMap reads it."""

    all_special_ids = [3]

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]


def test_token_map_reads_text_and_bytes_and_says_when_ambiguous():
    from hspi_onnx.inputs.tokenmap import TokenMap, UnknownToken

    # "Ġthere" is " there"; "Ã©" is é's two bytes; "Ã" and "©" are its lone bytes (invalid alone)
    tm = TokenMap(_Tok(["Ġthere", "Ã©", "Ã", "<|im_end|>", "©", "there", "Ġthere"]))
    assert tm.lookup(" there", None) == [0, 6]  # two ids print the same: both kept
    assert tm.lookup("é", None) == 1
    assert tm.lookup("<|im_end|>", None) == 3
    assert tm.lookup(None, [0xC3]) == 2 and tm.lookup(None, [0xA9]) == 4  # bytes are exact
    assert tm.lookup("", None) == [2, 4]  # lone bytes printed with invalid UTF-8 dropped
    assert tm.lookup("\ufffd", None) == [2, 4]  # ... or replaced
    with pytest.raises(UnknownToken, match="no token of the model"):
        tm.lookup("zebra", None)


def test_token_map_of_smollm2_inverts_its_tokenizer():
    pytest.importorskip("transformers")
    from hspi_onnx.inputs.chats import tokenizer_for
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.tokenmap import TokenMap

    tok = tokenizer_for(resolve_model("smollm2"))
    tm = TokenMap(tok)
    ids = tok.encode("Hello there! The café costs 3€.", add_special_tokens=False)
    assert b"".join(tm.pieces[i] for i in ids).decode() == "Hello there! The café costs 3€."
    for i in ids:
        found = tm.lookup(tok.decode([i]), None)
        assert found == i or (isinstance(found, list) and i in found)


# --- a real llama-cpp-python server ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv: list[str], log, what: str, env=None, wait: float = 180):
    """A server started on loopback (its output to ``log``), once ``/v1/models`` answers: (process, URL)."""
    import httpx

    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*argv, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{what} did not come up in {wait:.0f} s")


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's [server] extra is not installed")
    from hspi_onnx.models.smollm2 import gguf_path

    # F16: on a host with AMX, llama.cpp's AMX buffer segfaults on every quantized type, and the
    # server has no --no-repack (see runtimes/llamacpp.py); F16 runs with the same settings everywhere
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path("F16")), "--model_alias", "smollm2"]
    argv += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1", "--flash_attn", "false"]
    argv += ["--host", "127.0.0.1"]
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, url = _start(argv, log, "llama_cpp.server", os.environ | {"OMP_NUM_THREADS": "1"})
    yield url
    _stop(proc)


@pytest.mark.slow
def test_llama_cpp_server_is_identified_and_a_false_claim_refuted(llama_server, tmp_path):
    db, probes, answers = tmp_path / "db", tmp_path / "chats.npz", tmp_path / "answers.jsonl"
    proc = hspi("probes", "make", "smollm2", "-n", "2", "-o", probes)
    assert proc.returncode == 0, proc.stderr[-2000:]
    globs = ["llamacpp/*/f16/*fa=off,*threads=1,*", "llamacpp/*/f16/*fa=on,*threads=1,*"]
    globs += ["llamacpp/*/q4_k_m/*fa=off,*threads=1,*"]
    proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", *[x for g in globs for x in ("-p", g)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the server's default repeat penalty (1.1) leaves the greedy path: still identified
    proc = hspi("query", llama_server, "--wire", "openai", "--probes", probes, "--lm", "smollm2", "-o", answers, "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(lines) == 2 and all(d["normalizer"] == "server" and d["response"]["model"] for d in lines)
    assert all(d["response"]["usage"]["prompt_tokens"] > 20 for d in lines)
    streamed = tmp_path / "streamed.jsonl"
    proc = hspi(
        "query", llama_server, "--wire", "openai", "--probes", probes, "--lm", "smollm2", "-o", streamed, "--stream"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for a, b in zip(lines, [json.loads(line) for line in streamed.read_text().splitlines()]):
        assert (a["tokens"], a["top_logprobs"], a["text"]) == (b["tokens"], b["top_logprobs"], b["text"])
    proc = hspi("match", answers, "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["verdict"] == "identified", report
    (cls,) = report["classes"]
    assert all("/f16/" in p and "fa=off" in p for p in cls["platforms"])
    proc = hspi("verify", answers, "--db", db, "--claim", "precision=q4_k_m")
    assert proc.returncode == 1 and "INCONSISTENT" in proc.stdout
    proc = hspi("verify", answers, "--db", db, "--claim", "precision=f16,fa=off")
    assert proc.returncode == 0 and "CONSISTENT" in proc.stdout
    # seeded sampling: the answers leave the greedy path where the sampler did; compared up to there
    sampled = tmp_path / "sampled.jsonl"
    params = ["--param", "temperature=1.0", "--param", "seed=5", "--param", "top_k=0"]
    proc = hspi(
        "query", llama_server, "--wire", "openai", "--probes", probes, "--lm", "smollm2", "-o", sampled, *params
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(hspi("match", sampled, "--db", db, "--json").stdout)
    fitting = [p for c in report["classes"] for p in c["platforms"]]
    assert any("/f16/" in p and "fa=off" in p for p in fitting) and not any("q4_k_m" in p for p in fitting), report


# --- hostile chat answers ------------------------------------------------------------------------


def _plan():
    from hspi_onnx.inputs.tokenmap import TokenMap
    from hspi_onnx.query.chat import ChatPlan

    tokens = TokenMap(_Tok(["A", "B", "C", "<|im_end|>", "ĠD"]))
    return ChatPlan("lm", [[{"role": "user", "content": "hi"}]], [5], tokens, 3)


def _entry(token="A", k=2, lp=-0.5):
    alts = [{"token": t, "logprob": v, "bytes": None} for t, v in zip(["A", "B", "C"], [lp, -1.0, -2.0])][:k]
    return {"token": token, "logprob": lp, "bytes": None, "top_logprobs": alts}


def _reply(doc_or_text, status=200, ctype="application/json"):
    from hspi_onnx.query.transport import Reply

    body = doc_or_text if isinstance(doc_or_text, bytes) else json.dumps(doc_or_text).encode()
    return Reply(status, {}, body, 0.01, raw_headers={"content-type": ctype})


def _answer(content, usage=None, finish="length"):
    doc = {"id": "x", "model": "served", "choices": [{"message": {"content": "AB"}, "logprobs": {"content": content}}]}
    doc["choices"][0]["finish_reason"] = finish
    if usage is not None:
        doc["usage"] = usage
    return doc


def _parse(doc):
    from hspi_onnx.query.chat import parse_chat_answer

    return parse_chat_answer(doc, "test", _plan(), 0, 7, "sha", 2)


def test_a_server_ignoring_logprobs_leaves_its_text_as_evidence(tmp_path):
    doc = {"choices": [{"message": {"content": "Hello there"}, "finish_reason": "length"}]}
    line = _parse(doc | {"usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    assert line["tokens_from"] == "text" and line["tokens"] == [] and line["completion_tokens"] == 2
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (q,) = read_generation(path).queries
    assert q.text == "Hello there" and q.n_tokens == 2

    def decode(ids):
        return "".join({5: "Hello", 6: " there", 7: "!", 2: ""}[i] for i in ids)

    rows = {"tokens": np.array([5, 6, 7]), "topk_ids": np.zeros((3, 1), np.int32)}
    assert consistent(q, rows, decode=decode)
    assert not consistent(q, dict(rows, tokens=np.array([5, 7, 6])), decode=decode)
    q.n_tokens = None  # without the server's count the whole generation must read so
    assert not consistent(q, rows, decode=decode)
    assert consistent(q, dict(rows, tokens=np.array([5, 6, 2, -1])), decode=decode)


def test_a_chat_answer_becomes_a_generation_line():
    line = _parse(_answer([_entry(), _entry("B")], usage={"prompt_tokens": 5}))
    assert line["tokens"] == [0, 1] and line["top_logprobs"][0] == [[0, -0.5], [1, -1.0]]
    assert line["normalizer"] == "server" and line["response"]["model"] == "served" and line["probe_id"] == 7


def test_a_sampled_token_outside_the_top_k_added_by_the_server_is_dropped():
    """llama-cpp-python lists the sampled token as a (k + 1)-th alternative when it is not in the
    top k: that entry goes, the top k stay; a (k + 1)-th entry of another token is still refused."""
    line = _parse(_answer([_entry("C", k=3), _entry("B")]))
    assert line["tokens"] == [2, 1] and line["top_logprobs"][0] == [[0, -0.5], [1, -1.0]]
    from hspi_onnx.query.transport import QueryError

    with pytest.raises(QueryError, match="3 top log-probabilities, asked 2"):
        _parse(_answer([_entry("B", k=3)]))


def test_alternatives_merged_by_text_are_not_compared_there(tmp_path):
    """llama-cpp-python keys top_logprobs by text: two ids printing the same collapse into one
    entry. Such a position keeps its token but its alternatives are left out of the comparison."""
    line = _parse(_answer([_entry(), _entry("B", k=1)]))
    assert line["top_logprobs"][1] == [] and line["collapsed_positions"] == 1
    rows = _rows([[5.0, 4.0, 1.0], [3.0, 2.0, 1.0]], tokens=[10, 11])
    q = _query(rows, _llama_cpp_logprobs(rows).astype(np.float64), k=2)
    q.skipped = {1}
    q.top_ids[1] = [99, 98]  # whatever was there is not compared
    path = tmp_path / "g.jsonl"
    path.write_text(generation_line("set", q, "m", "server") + "\n")
    back = read_generation(path).queries[0]
    assert back.skipped == {1} and consistent(back, rows, "server")
    back.tokens[1] = 12
    assert not consistent(back, rows, "server")  # the token itself still counts


@pytest.mark.parametrize(
    "doc, message",
    [
        (_answer([_entry(lp=float("-inf"))]), "-inf"),
        (_answer([_entry(lp=0.5)]), "at most 0"),
        (_answer([_entry(k=1)]), "fewer top log-probabilities than the 2 asked at every position"),
        (_answer([_entry(k=3)]), "3 top log-probabilities, asked 2"),
        (_answer([_entry("zebra")]), "no token of the model"),
        (_answer([_entry()] * 4), "4 tokens with log-probabilities, asked for at most 3"),
        (_answer([]), "0 tokens"),
        (_answer([_entry()], usage={"prompt_tokens": 6}), "counted 6 prompt tokens, the DB's chat has 5"),
        ({"choices": [{"message": {"role": "assistant"}}]}, "neither logprobs.content nor a message's text"),
        (_answer([]) | {"choices": [{"message": {"content": "AB"}}], "usage": {"completion_tokens": 9}}, "9 generated"),
        ({"choices": []}, "no single choice"),
    ],
)
def test_hostile_chat_answers_are_one_clear_error(doc, message):
    from hspi_onnx.query.transport import QueryError

    with pytest.raises(QueryError, match=message):
        _parse(doc)


def _sse(chunks, done=True) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + (["data: [DONE]\n\n"] if done else [])
    return (": keep-alive\n\n" + "".join(lines)).encode()


def test_streamed_answers_assemble_like_plain_ones_and_truncation_is_caught():
    from hspi_onnx.query.chat import stream_doc
    from hspi_onnx.query.transport import QueryError

    def chunk(entry=None, finish=None, text=""):
        choice = {"delta": {"content": text} if text else {}, "finish_reason": finish}
        choice["logprobs"] = {"content": [entry]} if entry else None
        return {"id": "x", "model": "served", "choices": [choice]}

    chunks = [chunk(_entry(), text="A"), chunk(_entry("B"), text="B"), chunk(finish="length")]
    doc = stream_doc(_reply(_sse(chunks), ctype="text/event-stream"), "test")
    assert _parse(doc)["tokens"] == [0, 1] and doc["choices"][0]["message"]["content"] == "AB"
    assert doc["choices"][0]["finish_reason"] == "length"
    with pytest.raises(QueryError, match="without \\[DONE\\]"):
        stream_doc(_reply(_sse(chunks, done=False), ctype="text/event-stream"), "test")
    with pytest.raises(QueryError, match="not JSON"):
        stream_doc(_reply(b"data: {oops\n\ndata: [DONE]\n\n", ctype="text/event-stream"), "test")
    with pytest.raises(QueryError, match="an HTML page"):
        stream_doc(_reply(b"<html><title>502 Bad Gateway</title></html>", 502, "text/html"), "test")


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    from hspi_onnx.models.smollm2 import hf_folder

    exe = os.path.join(os.path.dirname(sys.executable), "transformers")
    argv = [exe, "serve", str(hf_folder()), "--device", "cpu", "--dtype", "float32", "--attn-implementation", "sdpa"]
    argv += ["--host", "127.0.0.1"]
    log = tmp_path_factory.mktemp("tfserve") / "server.log"
    proc, url = _start(argv, log, "transformers serve", os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    yield url
    _stop(proc)


@pytest.mark.slow
def test_transformers_serve_without_logprobs_is_matched_by_its_text(transformers_server, tmp_path):
    """transformers serve ignores logprobs: the answers' text is the evidence, compared with each
    DB platform's greedy tokens decoded by the model's tokenizer."""
    db, probes, answers = tmp_path / "db", tmp_path / "chats.npz", tmp_path / "answers.jsonl"
    proc = hspi("probes", "make", "smollm2", "-n", "2", "-o", probes)
    assert proc.returncode == 0, proc.stderr[-2000:]
    globs = ["transformers/*/fp32/*attn=sdpa*threads=1", "llamacpp/*/q4_0/*fa=off,*threads=1,*"]
    proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", *[x for g in globs for x in ("-p", g)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = ["query", transformers_server, "--wire", "openai", "--probes", probes, "--lm", "smollm2", "-o", answers]
    proc = hspi(*args, "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert all(d["tokens_from"] == "text" and d["text"] for d in lines)
    proc = hspi("match", answers, "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["evidence"] == "text (decoded)"
    fitting = [p for c in report["classes"] for p in c["platforms"]]
    assert any(p.startswith("transformers@") and "attn=sdpa" in p for p in fitting), report
    assert not any("/q4_0/" in p for p in fitting), report


# --- hspi serve for a language model, and the official openai client ------------------------------

SERVED = "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*"


@pytest.fixture(scope="module")
def hspi_llm_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("llama_cpp")
    argv = [sys.executable, "-m", "hspi_onnx.cli", "serve", "smollm2", "-p", SERVED]
    proc, url = _start(argv, tmp_path_factory.mktemp("hspiserve") / "server.log", "hspi serve")
    yield url
    _stop(proc)


@pytest.mark.slow
def test_official_openai_client_talks_to_hspi_serve_and_the_answers_identify_the_platform(hspi_llm_server, tmp_path):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{hspi_llm_server}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hi! How are you today?"}]
    answer = client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=16, temperature=0, logprobs=True, top_logprobs=5
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("length", "stop") and choice.message.content
    assert len(choice.logprobs.content) == answer.usage.completion_tokens - (choice.finish_reason == "stop")
    first = choice.logprobs.content[0]
    assert len(first.top_logprobs) == 5 and first.token == first.top_logprobs[0].token and first.bytes
    assert bytes(first.bytes).decode() == first.token
    chunks = list(
        client.chat.completions.create(
            model="smollm2", messages=messages, max_tokens=16, temperature=0, logprobs=True, top_logprobs=5, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    tokens = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert streamed == choice.message.content and [e.logprob for e in tokens] == [
        e.logprob for e in choice.logprobs.content
    ]
    with pytest.raises(openai.BadRequestError, match="temperature must be 0"):
        client.chat.completions.create(model="smollm2", messages=messages, temperature=0.7)
    # the black box answers what the DB holds for its platform: hspi query + match name it
    db, probes, answers = tmp_path / "db", tmp_path / "chats.npz", tmp_path / "answers.jsonl"
    assert hspi("probes", "make", "smollm2", "-n", "2", "-o", probes).returncode == 0
    proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", "-p", SERVED)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = hspi(
        "db", "build", "smollm2", "--db", db, "--probes", probes, "-q", "-p", "llamacpp/*/q8_0/*fa=on,*threads=1,*"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    q = ["query", hspi_llm_server, "--wire", "openai", "--probes", probes, "--lm", "smollm2", "-o", answers, "-q"]
    proc = hspi(*q, "--top-logprobs", "20")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(hspi("match", answers, "--db", db, "--json").stdout)
    assert report["verdict"] == "identified" and all("fa=off" in p for p in report["classes"][0]["platforms"])


def test_a_departure_is_compared_up_to_where_it_left_with_exact_logprobs_too():
    """The exact (DB-normalized) comparison cuts at the departure as the server one does (a
    sampled request from the DB's own rows: its tokens leave the other platform's greedy path)."""
    rows = _rows([[5.0, 4.0, 1.0], [3.0, 2.0, 1.0], [4.0, 1.0, 0.0]], tokens=[10, 10, 10])
    q = _query(rows, rows["topk_logprobs"].astype(np.float64))
    q.tokens = np.array([10, 11, 12])  # sampled its second choice at position 1
    assert consistent(q, rows)
    moved = dict(rows, topk_logprobs=rows["topk_logprobs"] + np.float32([[0, 0, 0], [0, 1e-3, 0], [0, 0, 0]]))
    assert not consistent(q, moved)  # position 1 still counts
    later = dict(rows, topk_logprobs=rows["topk_logprobs"] + np.float32([[0, 0, 0], [0, 0, 0], [0, 1e-3, 0]]))
    assert consistent(q, later)  # position 2 came from another prefix


@pytest.mark.slow
def test_a_chat_query_resumes_after_the_server_is_killed_and_restarted(tmp_path):
    """A chat server SIGKILLed mid-query: one error line, every answer received kept; restarted on
    the same port, the same command completes the file, identical (bar request ids, times and
    latencies) to an uninterrupted query."""
    pytest.importorskip("llama_cpp")
    from hspi_onnx.serve.process import ServerProcess, free_port

    probes, out, fresh = tmp_path / "chats.npz", tmp_path / "s.jsonl", tmp_path / "fresh.jsonl"
    assert hspi("probes", "make", "smollm2", "-o", probes).returncode == 0  # the 8 built-in chats
    port = free_port()
    servers = [ServerProcess("smollm2", SERVED, port)]
    argv = [sys.executable, "-m", "hspi_onnx.cli", "query", f"http://127.0.0.1:{port}", "--wire", "openai"]
    argv += ["--probes", str(probes), "--lm", "smollm2", "--retries", "0", "--rate", "2", "-q"]
    try:
        servers[0].wait(180)
        query = subprocess.Popen([*argv, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and query.poll() is None and len(_lines(out)) < 2:
            time.sleep(0.01)
        assert query.poll() is None, query.communicate()
        servers[0].kill()
        _, err = query.communicate(timeout=120)
        kept = _lines(out)
        assert query.returncode == 2 and 0 < len(kept) < 8, err
        assert err.strip().count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
        servers.append(ServerProcess("smollm2", SERVED, port))
        servers[-1].wait(180)
        resumed = subprocess.run([*argv, "-o", str(out)], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        whole = subprocess.run([*argv, "-o", str(fresh)], capture_output=True, text=True, timeout=300)
        assert whole.returncode == 0, whole.stderr
    finally:
        for s in servers:
            s.kill()
    lines = _lines(out)
    assert lines[: len(kept)] == kept and len(lines) == len(_lines(fresh)) == 8
    assert [_stable(a) for a in lines] == [_stable(b) for b in _lines(fresh)]


def _lines(path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _stable(line: bytes) -> dict:
    """An answer line without what differs between two requests of the same chat."""
    from hspi_onnx.query.resume import KEY

    doc = json.loads(line)
    for key in ("id", "created"):
        doc["response"].pop(key, None)
    for key in ("latency_s", "headers", "attempts"):
        doc["parameters"][KEY].pop(key, None)
    return doc


@pytest.mark.slow
def test_logged_chats_are_replayed_teacher_forced_on_the_candidates(llama_server, tmp_path):
    """Ordinary traffic (chats the DB never ran) logged as OpenAI request/response JSON: the DB's
    stacks are teacher-forced on the logged answers; with logprobs the exact stack is named, greedy
    text alone names the stacks that produce exactly that text, sampled text is refused."""
    import httpx

    db, probes = tmp_path / "db", tmp_path / "chats.npz"
    assert hspi("probes", "make", "smollm2", "-n", "1", "-o", probes).returncode == 0
    globs = ["llamacpp/*/f16/*fa=off,*threads=1,*", "llamacpp/*/f16/*fa=on,*threads=1,*"]
    globs += ["llamacpp/*/q4_0/*fa=off,*threads=1,*", "transformers/*/fp32/*attn=sdpa*threads=1"]
    proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", *[x for g in globs for x in ("-p", g)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    exchanges = []
    for content in ("Name three rivers in Africa.", "Write a haiku about rain."):
        req = {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 16}
        req |= {"temperature": 0, "repeat_penalty": 1.0, "logprobs": True, "top_logprobs": 5}
        resp = httpx.post(f"{llama_server}/v1/chat/completions", json=req, timeout=120).json()
        exchanges.append({"request": req, "response": resp})
    with_lp, text_only, sampled = tmp_path / "lp.jsonl", tmp_path / "text.jsonl", tmp_path / "sampled.jsonl"
    with_lp.write_text("".join(json.dumps(x) + "\n" for x in exchanges))
    for x in exchanges:
        x["request"] = {k: v for k, v in x["request"].items() if k not in ("logprobs", "top_logprobs")}
        x["response"]["choices"][0]["logprobs"] = None
    text_only.write_text("".join(json.dumps(x) + "\n" for x in exchanges))
    for x in exchanges:
        x["request"]["temperature"] = 0.8
    sampled.write_text("".join(json.dumps(x) + "\n" for x in exchanges))
    for log, evidence in ((with_lp, "top_logprobs"), (text_only, "text")):
        proc = hspi("match", log, "--db", db, "--replay", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout)
        assert report["evidence"] == evidence and report["replay"]["inputs"] == 2
        fitting = [p for c in report["classes"] for p in c["platforms"]]
        assert any("/f16/" in p and "fa=off" in p for p in fitting), report
        assert not any("/q4_0/" in p for p in fitting), report  # its greedy text differs
        if evidence == "top_logprobs":  # the logprobs tell flash attention apart, the text need not
            assert report["verdict"] == "identified" and not any("fa=on" in p for p in fitting), report
    proc = hspi("match", sampled, "--db", db, "--replay")
    assert proc.returncode == 2 and "at temperature 1 without truncation" in proc.stderr
    assert "this one used temperature 0.8" in proc.stderr
    # at temperature 1: scored by likelihood; the served stack is never the one rejected
    sampled.write_text(sampled.read_text().replace('"temperature": 0.8', '"temperature": 1'))
    proc = hspi("match", sampled, "--db", db, "--replay", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    lk = report["likelihood"]
    assert report["evidence"] == "likelihood" and lk["tokens_used"] > 16 and len(lk["stacks"]) == 4
    served = [p for p in lk["stacks"] if "/f16/" in p and "fa=off" in p]
    assert served and not lk["stacks"][served[0]]["rejected"]
    assert any("/f16/" in p and "fa=off" in p for c in report["classes"] for p in c["platforms"])
    proc = hspi("match", sampled, "--db", db, "--replay")
    assert proc.returncode == 0 and "nats" in proc.stdout and "not rejected" in proc.stdout
    proc = hspi("verify", with_lp, "--db", db, "--replay", "--claim", "runtime=transformers")
    assert proc.returncode == 1 and "INCONSISTENT" in proc.stdout


# --- hspi audit: deviation, the report, the whole loop against hspi serve --------------------------


def test_deviation_is_blind_to_the_normalizer_and_stops_where_the_path_parts():
    from hspi_onnx.match.deviation import deviation, rank_key

    rows = _rows([[5.25, 4.0, 1.5, -2.0], [3.0, 2.75, 0.5, 0.25], [1.0, 0.5, 0.25, 0.0]])
    served = _llama_cpp_logprobs(rows).astype(np.float64)
    same = deviation(_query(rows, served), rows)
    assert same.parted_at is None and same.compared == 3 and max(same.values) < 1e-5
    assert same.first_difference() is None
    moved = dict(rows, topk_logprobs=rows["topk_logprobs"] + np.float32([[0, 0, 0.01, 0], [0] * 4, [0] * 4]))
    d = deviation(_query(rows, served), moved)
    assert d.first_difference() == 0 and abs(d.values[0] - 0.01) < 1e-5 and d.values[1] < 1e-5
    parted = deviation(_query(rows, served), dict(rows, tokens=np.array([10, 12, 10], np.int32)))
    assert parted.parted_at == 1 and parted.compared == 2 and parted.first_difference() == 1
    elsewhere = dict(rows, topk_ids=rows["topk_ids"] + 100)  # ranks none of the suspect's ids
    outside = deviation(_query(rows, served), elsewhere)
    assert outside.outside == [0, 1, 2] and outside.values[0] is None and outside.largest == float("inf")
    assert rank_key([same]) < rank_key([d]) < rank_key([parted])


def _audit_doc(text: str) -> dict:
    dev = {"deviation": [0.0, 2e-3, None], "outside_top_k": [2], "parted_at": 2, "compared": 3}
    return {
        "created": "2026-12-05T00:00:00Z",
        "url": "http://127.0.0.1:1",
        "command": ["hspi", "audit"],
        "claim": {"runtime": "transformers"},
        "verdict": "INCONSISTENT",
        "reason": "none fits",
        "best_match": "llamacpp@0.3.36/cpu/q8_0/bs=1",
        "best_match_fits": True,
        "nearest_claimed": "transformers@5/cpu/bf16/bs=1",
        "strength": {"summary": "1 of 1 request differs", "requests": 1, "tokens": 3, "evidence": "top_logprobs"}
        | {"db_classes": 2, "classes_left": 1, "claimed_platforms_in_db": 1, "requests_differing_from_claimed": 1},
        "requests": [
            {"probe_id": 0, "tokens": 3, "best": dev, "claimed": dev, "fits_best": True, "fits_claimed": False}
        ],
        "request_log": [
            {"probe_id": 0, "status": 200, "latency_s": 0.1, "attempts": 1, "tokens": 3, "evidence": "top_logprobs"}
            | {"finish_reason": "length", "server": {"model": "<b>m</b>"}, "text": text}
        ],
        "match": {"classes": [{"id": 0, "platforms": ["llamacpp@0.3.36/cpu/q8_0/bs=1"]}]},
        "versions": {"hspi_onnx": "0.1.0"},
        "db": "db",
        "answers": "a.jsonl",
    }


def test_the_report_is_one_well_formed_page_that_loads_nothing_and_escapes_what_servers_said():
    from html.parser import HTMLParser

    from hspi_onnx.match.audit_html import render

    page = render(_audit_doc('<script>alert(1)</script><img src="http://x/y.png">'))
    tags: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)
            for name, value in attrs:
                assert name not in ("src", "href") or (value or "").startswith("data:"), (tag, name, value)

    Collect().feed(page)
    assert "script" not in tags and "img" not in tags and tags.count("svg") == 1
    assert "&lt;script&gt;" in page and "&lt;b&gt;m&lt;/b&gt;" in page
    assert "default-src 'none'" in page and page.count("<circle") == 4  # 2 values x 2 platforms


def _open_in_browser(path) -> dict:
    """The report in headless Chromium (Debian's chromium and chromedriver, which make's set-up
    installs), every network request refused: what rendered and what the console said."""
    import shutil

    pytest.importorskip("selenium", reason="selenium is not installed")
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no chromium and chromedriver here (make's set-up installs them where apt-get can)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--proxy-server=127.0.0.1:9")  # no network: any fetch would fail loudly
    opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    try:
        browser.get(path.resolve().as_uri())
        plots = browser.find_elements(By.CSS_SELECTOR, "svg.deviation-plot")
        return {
            "verdict": browser.find_element(By.ID, "verdict").text,
            "plots": [(p.size["width"], p.size["height"]) for p in plots],
            "points": len(browser.find_elements(By.CSS_SELECTOR, "svg.deviation-plot circle")),
            "resources": browser.execute_script("return performance.getEntriesByType('resource').length"),
            "console": browser.get_log("browser"),
            "png": len(browser.get_screenshot_as_png()),
        }
    finally:
        browser.quit()


@pytest.mark.slow
def test_audit_names_the_served_stack_refutes_a_false_claim_and_its_report_renders_offline(hspi_llm_server, tmp_path):
    """hspi serve runs llama.cpp q8_0 (label hidden); the provider claims transformers bf16 sdpa:
    INCONSISTENT, naming llama.cpp q8_0 with flash attention off; the true claim is CONSISTENT
    from the same answers (resumed, not asked again); the report opens in a browser offline."""
    db, probes = tmp_path / "db", tmp_path / "chats.npz"
    assert hspi("probes", "make", "smollm2", "-n", "2", "-o", probes).returncode == 0
    globs = [SERVED, "llamacpp/*/q8_0/*fa=on,*threads=1,*", "transformers/*/bf16/*attn=sdpa*threads=1"]
    proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", *[x for g in globs for x in ("-p", g)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    report, answers = tmp_path / "false.html", tmp_path / "answers.jsonl"
    common = ["audit", hspi_llm_server, "--db", db, "--probes", probes, "--answers", answers, "-q"]
    proc = hspi(*common, "--claim", "runtime=transformers,precision=bf16,attn=sdpa", "-o", report, "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "INCONSISTENT" and doc["identified"] and doc["best_match_fits"]
    assert "/q8_0/" in doc["best_match"] and "fa=off" in doc["best_match"]
    assert (
        doc["nearest_claimed"].startswith("transformers@") and doc["strength"]["requests_differing_from_claimed"] == 2
    )
    assert all(r["best"]["parted_at"] is None and max(r["best"]["deviation"]) < 1e-5 for r in doc["requests"])
    assert all(max(v for v in r["claimed"]["deviation"] if v is not None) > 1e-4 for r in doc["requests"])
    assert [r["status"] for r in doc["request_log"]] == [200, 200]
    seen = _open_in_browser(report)
    assert seen["verdict"] == "INCONSISTENT" and len(seen["plots"]) == 2 and seen["points"] > 4
    assert all(w > 100 and h > 100 for w, h in seen["plots"]) and seen["png"] > 1000
    assert seen["resources"] == 0 and not [m for m in seen["console"] if m["level"] in ("SEVERE", "WARNING")]
    before = answers.read_text()
    true = tmp_path / "true.html"
    proc = hspi(*common, "--claim", "runtime=llamacpp,precision=q8_0,fa=off", "-o", true)
    assert proc.returncode == 0 and "CONSISTENT" in proc.stdout and true.as_uri() in proc.stdout, proc.stderr
    assert answers.read_text() == before  # the answers were resumed: nothing asked again
    assert _open_in_browser(true)["verdict"] == "CONSISTENT"


# --- hostile chat servers over HTTP: bounded, one clear error, nothing lost -----------------------


class _ChatFaults:
    """A chat-completions server whose next answers follow ``plan`` (then plain answers)."""

    def __init__(self):
        from http.server import ThreadingHTTPServer

        from conftest import JsonHandler

        faults = self

        class Handler(JsonHandler):
            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = faults.plan.pop(0) if faults.plan else "ok"
                faults.posts += 1
                doc = _answer([_entry(), _entry("B")], usage={"prompt_tokens": 5})
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}', extra=[("Retry-After", "0")])
                if fault == "html":
                    return self._send(502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html")
                if fault == "nan":
                    return self._send(200, json.dumps(doc).replace("-0.5", "NaN").encode())
                if fault == "huge":
                    try:  # the client hangs up once it has read past its limit
                        return self._send(200, json.dumps(doc | {"padding": "x" * (1 << 20)}).encode())
                    except OSError:
                        return
                if fault == "endless":  # one event, then keep-alive comments until the client goes
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    chunk = {"choices": [{"delta": {"content": "A"}, "logprobs": {"content": [_entry()]}}]}
                    try:
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        for _ in range(400):
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                            time.sleep(0.025)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                assert req["logprobs"] and req["top_logprobs"] == 2 and not req.get("stream")
                self._send(200, json.dumps(doc).encode())

        self.plan, self.posts = [], 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_hostile_chat_servers_stop_by_themselves_with_one_clear_error_and_keep_what_came(tmp_path):
    from hspi_onnx.inputs.probes import ProbeSet
    from hspi_onnx.query import QueryError, QueryOptions, query

    plan = _plan()
    plan.messages, plan.prompt_lengths = plan.messages * 4, plan.prompt_lengths * 4
    ids = np.arange(4, dtype=np.int64)
    probes = ProbeSet("chats", "chat", 0, "probe", {"input_ids": np.ones((4, 5), np.int64)}, ids)
    faults = _ChatFaults()
    out = tmp_path / "answers.jsonl"

    def opts(**kw):
        o = QueryOptions(faults.url, "m", "openai", top_logprobs=2, backoff=0.01, max_body=256 << 10, **kw)
        o.chat, o.endpoint = plan, "chat"
        return o

    try:
        faults.plan = ["ok", "429", "ok", "html", "html"]  # the 429 waited out; the HTML page twice stops it
        with pytest.raises(QueryError, match="HTML page"):
            query(probes, out, opts(retries=1))
        assert len(_lines(out)) == 2
        for fault, message in (("nan", "chat 2.*at most 0, not nan"), ("huge", "over the limit of 0.25 MiB")):
            faults.plan = [fault]
            with pytest.raises(QueryError, match=message):
                query(probes, out, opts(retries=0))
            assert len(_lines(out)) == 2
        posts = faults.posts
        summary = query(probes, out, opts())
        assert (summary.before, summary.asked, faults.posts - posts) == (2, 2, 2)
        assert [json.loads(line)["probe_id"] for line in _lines(out)] == [0, 1, 2, 3]
        faults.plan = ["endless"]  # a stream that never ends: bounded by the timeout
        started = time.monotonic()
        streamed = opts(retries=0, timeout=1.0)
        streamed.stream = True
        with pytest.raises(QueryError, match="within 1 s"):
            query(probes, tmp_path / "streamed.jsonl", streamed)
        assert time.monotonic() - started < 8
    finally:
        faults.close()
