"""`hspi serve` against real clients: tritonclient (KServe v2, binary and JSON tensors) and the
official openai client, outputs compared bit for bit with the execution layer's."""

import json

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
openai = pytest.importorskip("openai")

from hspi_onnx.inputs.model import resolve_model  # noqa: E402
from hspi_onnx.inputs.probes import default_kind, generate  # noqa: E402
from hspi_onnx.run.adapter import resolve_platform  # noqa: E402
from hspi_onnx.run.runner import execute  # noqa: E402
from hspi_onnx.serve.openai_api import context_ids, log_softmax  # noqa: E402
from hspi_onnx.serve.process import ServerProcess  # noqa: E402

PLATFORM = "onnxruntime/*/fp32/bs=1,opt=all,threads=1"
PROMPT = "The digits data set holds 8x8 images of handwritten digits, "


@pytest.fixture(scope="module")
def servers():
    started = {m: ServerProcess(m, PLATFORM) for m in ("digits", "lm")}  # both start at once
    try:
        yield {m: s.wait() for m, s in started.items()}
    finally:
        for s in started.values():
            s.stop()


def _reference(model_name: str, inputs: dict):
    """What the execution layer computes for these rows on the served platform."""
    from hspi_onnx.inputs.probes import ProbeSet

    model = resolve_model(model_name)
    adapter, platform = resolve_platform(PLATFORM, model, default_kind(model))
    n = len(next(iter(inputs.values())))
    probes = ProbeSet("ref", default_kind(model), 0, "probe", inputs, np.arange(n, dtype=np.int64))
    return execute(adapter, model, platform, probes).outputs, str(platform)


def _triton_infer(client, probes, binary: bool):
    inp = tritonclient_http.InferInput("input", list(probes.primary.shape), "FP32")
    inp.set_data_from_numpy(probes.primary)  # binary request data, tritonclient's default
    outputs = [tritonclient_http.InferRequestedOutput("logits", binary_data=binary)]
    return client.infer(
        "digits", [inp], outputs=outputs, parameters={"probe_set": probes.sha256, "probe_ids": probes.ids.tolist()}
    )


def test_kserve_outputs_are_bit_identical_to_the_execution_layer(servers):
    model = resolve_model("digits")
    probes = generate(model, n=8).bind(model)
    want, _ = _reference("digits", probes.inputs)
    client = tritonclient_http.InferenceServerClient(servers["digits"].host)
    assert client.is_server_ready() and client.is_model_ready("digits")
    for binary in (True, False):
        result = _triton_infer(client, probes, binary)
        got = result.as_numpy("logits")
        assert got.dtype == want["logits"].dtype and got.shape == want["logits"].shape
        assert got.tobytes() == want["logits"].tobytes(), f"binary={binary}"
        params = result.get_response()["parameters"]
        assert params["probe_set"] == probes.sha256 and params["probe_ids"] == list(range(8))
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


def test_a_json_response_log_is_a_suspect_file(servers, tmp_path):
    import httpx

    from hspi_onnx.match.suspect import load_suspect

    model = resolve_model("digits")
    probes = generate(model, n=3).bind(model)
    want, _ = _reference("digits", probes.inputs)
    body = {
        "parameters": {"probe_set": probes.sha256, "probe_ids": probes.ids.tolist()},
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(probes.primary.shape), "data": probes.primary.tolist()}
        ],
    }  # nested data
    r = httpx.post(servers["digits"].url + "/v2/models/digits/infer", json=body, timeout=30)
    assert r.status_code == 200 and "inference-header-content-length" not in r.headers
    path = tmp_path / "answers.json"
    path.write_text(r.text)
    suspect = load_suspect(path)
    assert suspect.probes == probes.sha256 and suspect.ids.tolist() == [0, 1, 2]
    assert suspect.outputs["logits"].tobytes() == want["logits"].tobytes()


BINARY_HEAD = (
    b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], '
    b'"parameters": {"binary_data_size": 256}}]}'
)


@pytest.mark.parametrize(
    "body, headers, status, words",
    [
        (b'{"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 1, 8, 8], "data": [0]}]}', {}, 400, "FP32"),
        (b'{"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [0]}]}', {}, 400, "no input named"),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 9], "data": '
            + b"[0.5"
            + b", 0.5" * 71
            + b"]}]}",
            {},
            400,
            "shape",
        ),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": ["a"]}]}', {}, 400, "data"),
        (
            BINARY_HEAD + b"\0" * 100,
            {"Inference-Header-Content-Length": str(len(BINARY_HEAD))},
            400,
            "binary_data_size",
        ),
        (b"[" * 100000, {}, 400, "JSON"),
        (b"{" + b" " * (64 << 20), {}, 413, "over"),
    ],
)
def test_bad_requests_get_a_one_line_error(servers, body, headers, status, words):
    import httpx

    r = httpx.post(servers["digits"].url + "/v2/models/digits/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "\n" not in message


def test_tritonclient_raises_on_a_bad_request(servers):
    from tritonclient.utils import InferenceServerException

    client = tritonclient_http.InferenceServerClient(servers["digits"].host)
    inp = tritonclient_http.InferInput("input", [2, 1, 8, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 1, 8, 4), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("digits", [inp])
    with pytest.raises(InferenceServerException, match="no model"):
        client.get_model_metadata("resnet")


def test_openai_completion_logprobs_are_the_platforms(servers):
    client = openai.OpenAI(base_url=servers["lm"].url + "/v1", api_key="x", max_retries=0)
    resp = client.completions.create(model="lm", prompt=PROMPT, max_tokens=3, logprobs=5)
    choice = resp.choices[0]
    ids = choice.logprobs.model_extra["token_ids"]
    assert choice.text == bytes(ids).decode("latin-1") and len(ids) == 3
    assert resp.usage.prompt_tokens == len(PROMPT) and resp.usage.completion_tokens == 3
    assert choice.logprobs.text_offset == [len(PROMPT) + i for i in range(3)]
    text = PROMPT.encode()
    contexts = np.stack([context_ids(text + bytes(ids[:i]), 32) for i in range(3)])
    logits, _ = _reference("lm", {"tokens": contexts})
    for step in range(3):
        lp = log_softmax(logits["logits"][step])
        assert ids[step] == int(np.argmax(lp))
        assert choice.logprobs.token_logprobs[step] == float(lp[ids[step]])
        best = np.argsort(-lp, kind="stable")[:5]
        assert choice.logprobs.top_logprobs[step] == {chr(int(b)): float(lp[b]) for b in best}
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="lm", prompt="x", max_tokens=0)


def test_short_prompts_are_left_padded_with_zero():
    assert context_ids(b"ab", 4).tolist() == [0, 0, 97, 98]
    assert context_ids(b"abcdef", 4).tolist() == [99, 100, 101, 102]
    assert context_ids(b"", 2).tolist() == [0, 0]


def test_no_response_names_the_platform(servers):
    import httpx

    model = resolve_model("digits")
    _, label = _reference("digits", generate(model, n=1).bind(model).inputs)
    secrets = {label, label.split("/")[0], "onnxruntime", "uvicorn"}
    seen = []
    with httpx.Client(timeout=30) as http:
        url = servers["digits"].url
        for path in (
            "/v2",
            "/v2/health/ready",
            "/v2/models/digits",
            "/v2/models/digits/ready",
            "/v2/models/x",
            "/v1/models",
            "/nowhere",
        ):
            seen.append(http.get(url + path))
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5] * 64}],
            "parameters": {"binary_data_output": True},
        }
        seen.append(http.post(url + "/v2/models/digits/infer", json=body))
        seen.append(http.post(url + "/v2/models/digits/infer", content=b"{}"))
        seen.append(
            http.post(
                servers["lm"].url + "/v1/completions",
                json={"model": "lm", "prompt": "hi", "max_tokens": 1, "logprobs": 1},
            )
        )
    assert seen[-3].headers["inference-header-content-length"]
    for r in seen:
        text = (r.content + json.dumps(dict(r.headers)).encode()).decode("latin-1").lower()
        assert not any(s.lower() in text for s in secrets), (r.url, text[:300])


def test_openai_chat_and_token_id_prompts_give_the_completions_logprobs(servers):
    """The official client's chat (logprobs, top_logprobs) and a token-id prompt (vLLM's
    return_tokens_as_token_ids) answer exactly as the string-prompt completion does."""
    client = openai.OpenAI(base_url=servers["lm"].url + "/v1", api_key="x", max_retries=0)
    done = client.completions.create(model="lm", prompt=PROMPT, max_tokens=2, logprobs=4)
    chat = client.chat.completions.create(
        model="lm", messages=[{"role": "user", "content": PROMPT}], max_tokens=2, logprobs=True, top_logprobs=4
    )
    ids = done.choices[0].logprobs.model_extra["token_ids"]
    content = chat.choices[0].logprobs.content
    assert [c.bytes for c in content] == [[i] for i in ids]
    assert [c.logprob for c in content] == done.choices[0].logprobs.token_logprobs
    for step, entry in enumerate(content):
        assert {chr(t.bytes[0]): t.logprob for t in entry.top_logprobs} == done.choices[0].logprobs.top_logprobs[step]
    as_ids = client.completions.create(
        model="lm",
        prompt=[list(PROMPT.encode()), [0, 255, 7]],
        max_tokens=2,
        logprobs=4,
        extra_body={"return_tokens_as_token_ids": True},
    )
    assert len(as_ids.choices) == 2
    assert as_ids.choices[0].logprobs.tokens == [f"token_id:{i}" for i in ids]
    assert as_ids.choices[0].logprobs.token_logprobs == done.choices[0].logprobs.token_logprobs
    with pytest.raises(openai.BadRequestError, match="token ids from 0 to 255"):
        client.completions.create(model="lm", prompt=[300], max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="lm", messages=[{"role": "user", "content": "x"}], top_logprobs=2)


def test_query_openai_then_match_names_the_platform(servers, tmp_path):
    """hspi query --wire openai (token-id completions in batches, and chat) against the LM
    served on one platform; hspi match on the per-token top-k logprobs keeps the served platform
    and excludes the other precisions."""
    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.identify import CONSISTENT, match
    from hspi_onnx.match.suspect import load_suspect
    from hspi_onnx.query import QueryOptions, query

    model = resolve_model("lm")
    probes = generate(model, kind="text", n=6)
    url = servers["lm"].url
    query(probes, tmp_path / "c.jsonl", QueryOptions(url, protocol="openai", batch=4, top_logprobs=5))
    query(probes, tmp_path / "h.jsonl", QueryOptions(url + "/v1", protocol="openai", endpoint="chat", top_logprobs=5))
    lines = [[json.loads(ln)["tokens"] for ln in open(tmp_path / f)] for f in ("c.jsonl", "h.jsonl")]
    assert lines[0] == lines[1] and len(lines[0]) == 6
    db = ReferenceDB(tmp_path / "db", create=True)
    build(
        db,
        model,
        probes,
        [
            PLATFORM,
            "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
            "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
        ],
    )
    label = str(resolve_platform(PLATFORM, model, default_kind(model))[1])
    suspect = load_suspect(tmp_path / "h.jsonl")
    assert suspect.form == "logprobs" and suspect.index.shape == (6, 5)
    rep = match(suspect, db)
    assert rep.verdict.status == CONSISTENT and rep.verdict.platforms == [label]


def test_db_build_remote_equals_the_local_build(servers, tmp_path):
    """hspi db build --remote: the platform a server with --reveal-platform serves, built over
    KServe v2 binary tensors (20 probes in batches of 8: the last one wraps), is bit for bit the
    local build of that platform; a black-box server (no --reveal-platform) is refused by name."""
    from hspi_onnx.cli import main
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.db.store import ReferenceDB

    platform = "onnxruntime/*/fp32/bs=8,opt=all,threads=1"
    probes = tmp_path / "p.npz"
    generate(resolve_model("digits"), n=20).save(probes)

    def hspi(*args):
        try:
            main(list(args))
        except SystemExit as exc:
            return exc.code
        return 0

    with ServerProcess("digits", platform, extra=("--reveal-platform",)) as server:
        assert (
            hspi(
                "db",
                "build",
                "digits",
                "--db",
                str(tmp_path / "remote"),
                "--probes",
                str(probes),
                "--remote",
                server.url,
                "-q",
            )
            == 0
        )
    assert (
        hspi("db", "build", "digits", "--db", str(tmp_path / "local"), "--probes", str(probes), "-p", platform, "-q")
        == 0
    )
    (remote,), (local,) = load_groups(ReferenceDB(tmp_path / "remote")), load_groups(ReferenceDB(tmp_path / "local"))
    assert remote.platforms == local.platforms and len(remote.platforms) == 1
    label = remote.platforms[0]
    assert remote.outputs[label].dtype == np.float32
    assert remote.outputs[label].tobytes() == local.outputs[label].tobytes()
    assert (
        hspi(
            "db",
            "build",
            "digits",
            "--db",
            str(tmp_path / "x"),
            "--probes",
            str(probes),
            "--remote",
            servers["digits"].url,
            "-q",
        )
        == 2
    )
