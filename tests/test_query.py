"""hspi query against real servers: KServe's own ModelServer wrapping onnxruntime (skipped when
kserve is absent), and a small fault-injecting KServe v2 server for retries, errors and resume."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import numpy as np
import pytest

from conftest import JsonHandler
from hspi_onnx.cli import main
from hspi_onnx.match.suspect import load_suspect
from hspi_onnx.query import QueryError, QueryOptions, query
from hspi_onnx.serve.process import free_port

SECRET = "s3cr3t-token-value"


# -- a KServe v2 server with injectable faults ---------------------------------------------
class FaultHandler(JsonHandler):
    def do_GET(self):
        meta = {
            "name": "m",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        }
        self._send(200, json.dumps(meta).encode())

    def _openai(self, req: dict, fault: str):
        """A completions answer: per prompt one token, logits a fixed function of its ids."""
        prompts = req["prompt"] if isinstance(req["prompt"][0], list) else [req["prompt"]]
        choices = []
        for i, ids in enumerate(prompts):
            lp = np.log(np.arange(1, 9, dtype=np.float64) / 36.0)[::-1] - (sum(ids) % 3) * 1e-9
            top = {(f"token_id:{t}" if fault != "noids" else f"tok{t}"): float(lp[t]) for t in range(req["logprobs"])}
            if fault == "positive":
                top["token_id:0"] = 0.5
            logprobs = {"tokens": [next(iter(top))], "token_logprobs": [float(lp[0])], "top_logprobs": [top]}
            choices.append(
                {
                    "index": i,
                    "text": "x",
                    "finish_reason": "length",
                    **({} if fault == "nolp" else {"logprobs": logprobs}),
                }
            )
        self._send(200, json.dumps({"id": "c", "object": "text_completion", "model": "m", "choices": choices}).encode())

    def do_POST(self):
        srv = self.server
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.auth.append(self.headers.get("Authorization"))
        fault = srv.plan.pop(0) if srv.plan else "ok"
        srv.posts += 1
        if self.path == "/v1/completions" and fault in ("ok", "noids", "nolp", "positive"):
            return self._openai(req, fault)
        if fault == "429":
            return self._send(429, b'{"error": "slow down"}', extra=[("Retry-After", "0")])
        if fault == "500html":
            return self._send(
                500,
                b"<html><head><title>500 Internal Server Error</title></head>\n<body>oops</body></html>",
                "text/html",
            )
        if fault == "hang":
            srv.release.wait(5)
            return
        x = np.asarray(req["inputs"][0]["data"], np.float32).reshape(req["inputs"][0]["shape"])
        # awkward float32 values: their shortest decimal form differs from float64's
        y = (x.reshape(len(x), -1)[:, :10] * np.float32(1.1) + np.float32(1 / 3)).astype(np.float32)
        if fault == "nan":
            y[-1, 3] = np.nan
        out = {"name": "logits", "datatype": "FP32", "shape": list(y.shape)}
        binary = (req.get("parameters") or {}).get("binary_data_output")
        if binary:
            out["parameters"] = {"binary_data_size": y.nbytes}
        else:
            out["data"] = [float(v) if np.isfinite(v) else "NaN" for v in y.ravel()]
        head = json.dumps({"model_name": "m", "id": req["id"], "outputs": [out]}).replace('"NaN"', "NaN").encode()
        body = head + (y.astype("<f4").tobytes() if binary else b"")
        extra = [("Inference-Header-Content-Length", str(len(head)))] if binary else []
        if fault == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "huge":
            body += b" " * (1 << 20)
        self._send(200, body, extra=extra + [("X-Request-Id", req["id"]), ("Set-Cookie", "private=1")])


@pytest.fixture
def fault_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FaultHandler)
    srv.daemon_threads = True
    srv.plan, srv.auth, srv.posts, srv.release = [], [], 0, threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    model = resolve_model("digits")
    ps = generate(model, n=16)
    path = ps.save(tmp_path_factory.mktemp("probes") / "p.npz")
    return model, ps, path


@pytest.fixture
def hspi():
    """``hspi`` in this process; a non-zero exit raises."""

    def run(args):
        try:
            main(args)
        except SystemExit as exc:
            if exc.code:
                raise

    return run


def _opts(url, **kw):
    return QueryOptions(url, model="m", backoff=0.01, **kw)


def _rows(path):
    s = load_suspect(path)
    order = np.argsort(s.ids)
    return s.ids[order], s.outputs["logits"][order]


def test_answers_read_back_bit_exact_with_metadata(fault_server, probes, tmp_path):
    _, ps, _ = probes
    json_out, bin_out = tmp_path / "json.jsonl", tmp_path / "bin.jsonl"
    summary = query(
        ps, json_out, _opts(fault_server.url, batch=5, concurrency=3, rate=500, authorization=f"Bearer {SECRET}")
    )
    assert (summary.asked, summary.requests) == (16, 4)
    query(ps, bin_out, _opts(fault_server.url, batch=4, binary=True))
    ids, got = _rows(json_out)
    want = (ps.primary.reshape(16, -1)[:, :10] * np.float32(1.1) + np.float32(1 / 3)).astype(np.float32)
    assert ids.tolist() == ps.ids.tolist() and got.dtype == np.float32
    assert got.tobytes() == want.tobytes()
    assert _rows(bin_out)[1].tobytes() == want.tobytes()  # binary tensors, decoded and printed back
    text = json_out.read_text()
    assert SECRET not in text and "Set-Cookie" not in text.lower() and "private" not in text
    assert set(fault_server.auth[:4]) == {f"Bearer {SECRET}"}
    line = json.loads(text.splitlines()[0])
    meta = line["parameters"]["hspi_query"]
    assert meta["status"] == 200 and meta["latency_s"] >= 0 and meta["model"] == "m"
    assert meta["headers"]["x-request-id"] == line["id"] and meta["url"] == fault_server.url


def test_429_is_retried_after_retry_after(fault_server, probes, tmp_path):
    _, ps, _ = probes
    fault_server.plan = ["429", "429"]
    out = tmp_path / "s.jsonl"
    query(ps, out, _opts(fault_server.url, batch=8, retries=2))
    assert fault_server.posts == 4 and len(load_suspect(out)) == 16
    assert json.loads(out.read_text().splitlines()[0])["parameters"]["hspi_query"]["attempts"] == 3
    fault_server.plan = ["429", "429"]
    with pytest.raises(QueryError, match=r"HTTP 429 .*after 2 attempts"):
        query(ps, tmp_path / "t.jsonl", _opts(fault_server.url, batch=8, retries=1))


def test_html_500_is_one_line_and_keeps_earlier_answers(fault_server, probes, tmp_path, capsys, hspi):
    _, _, path = probes
    fault_server.plan = ["ok", "500html"]
    out = tmp_path / "s.jsonl"
    with pytest.raises(SystemExit) as exc:
        hspi(
            [
                "query",
                fault_server.url,
                "--probes",
                str(path),
                "-o",
                str(out),
                "--model",
                "m",
                "--batch",
                "4",
                "--retries",
                "0",
                "-q",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HTTP 500 (an HTML page)" in err and err.startswith("error: ")
    assert load_suspect(out).ids.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "fault, kw, message",
    [
        ("hang", {"timeout": 0.3}, "no answer within 0.3 s"),
        ("truncate", {}, "truncated"),
        ("huge", {"max_body": 64 << 10}, "over the limit of 0.0625 MiB"),
    ],
)
def test_faults_are_clear_errors(fault_server, probes, tmp_path, fault, kw, message):
    _, ps, _ = probes
    fault_server.plan = [fault]
    with pytest.raises(QueryError, match=message) as exc:
        query(ps, tmp_path / "s.jsonl", _opts(fault_server.url, batch=4, retries=0, **kw))
    assert "\n" not in str(exc.value)


def test_nan_answers_are_kept_as_evidence(fault_server, probes, tmp_path):
    """A NaN in an answer is written as JSON's NaN and read back by the suspect reader."""
    _, ps, _ = probes
    fault_server.plan = ["nan"]
    query(ps, tmp_path / "s.jsonl", _opts(fault_server.url, batch=4))
    s = load_suspect(tmp_path / "s.jsonl")
    values = s.outputs["logits"]
    assert np.isnan(values[3, 3]) and np.isfinite(np.delete(values.ravel(), 3 * 10 + 3)).all()


def test_resume_equals_uninterrupted_run(fault_server, probes, tmp_path):
    _, ps, _ = probes
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    query(ps, whole, _opts(fault_server.url, batch=3))
    fault_server.plan = ["ok", "ok", "500html"]
    with pytest.raises(QueryError):
        query(ps, part, _opts(fault_server.url, batch=3, retries=0))
    with open(part, "ab") as fh:
        fh.write(b'{"model_name": "m", "outp')  # a write cut short by a crash
    posts = fault_server.posts
    summary = query(ps, part, _opts(fault_server.url, batch=3, concurrency=2))
    assert (summary.before, summary.asked, fault_server.posts - posts) == (6, 10, 4)
    a, b = _rows(whole), _rows(part)
    assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
    assert query(ps, part, _opts(fault_server.url)).asked == 0  # nothing left to ask
    from hspi_onnx.inputs.probes import generate

    other = generate(probes[0], n=4, seed=1)
    with pytest.raises(QueryError, match="probe set"):
        query(other, part, _opts(fault_server.url))


def test_auth_env_and_bad_arguments(fault_server, probes, tmp_path, monkeypatch, capsys, hspi):
    _, _, path = probes
    out = tmp_path / "s.jsonl"
    args = ["query", fault_server.url, "--probes", str(path), "-o", str(out), "-q", "--auth-env", "HSPI_TEST_TOKEN"]
    with pytest.raises(SystemExit):
        hspi(args + ["--model", "m"])
    assert "HSPI_TEST_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("HSPI_TEST_TOKEN", SECRET)
    hspi(args + ["--model", "m"])
    assert fault_server.auth[-1] == f"Bearer {SECRET}" and SECRET not in out.read_text()
    with pytest.raises(QueryError, match="--model"):
        query(probes[1], out, QueryOptions(fault_server.url))


# -- KServe's own server -------------------------------------------------------------------
def serve_kserve(model_path: str, port: int) -> None:
    """Run kserve.ModelServer on ``port`` with one model, ``digits``, computed by onnxruntime."""
    sys.argv = sys.argv[:1]  # kserve parses the command line itself
    import kserve
    import onnxruntime as ort
    from kserve import InferOutput, InferResponse

    class OnnxModel(kserve.Model):
        def __init__(self):
            super().__init__("digits")
            self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
            self.ready = True

        def predict(self, payload, headers=None):
            feeds = {t.name: t.as_numpy() for t in payload.inputs}
            names = [o.name for o in self.session.get_outputs()]
            outs = self.session.run(names, feeds)
            return InferResponse(
                payload.id,
                self.name,
                [InferOutput(n, list(v.shape), "FP32", v) for n, v in zip(names, outs)],
                use_binary_outputs=payload.use_binary_outputs,
            )

    kserve.ModelServer(
        http_port=port, grpc_port=free_port(), enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([OnnxModel()])


@pytest.fixture(scope="module")
def kserve_url(probes):
    pytest.importorskip("kserve")
    import httpx

    model = probes[0]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, str(model.path), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded: 60 s
            if proc.poll() is not None:
                pytest.fail(f"kserve server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/models/digits/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("kserve server not ready within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_server_is_identified(kserve_url, probes, tmp_path, binary, hspi):
    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.identify import match

    model, ps, path = probes
    out = tmp_path / "suspect.jsonl"
    hspi(
        [
            "query",
            kserve_url,
            "--probes",
            str(path),
            "-o",
            str(out),
            "--model",
            "digits",
            "--batch",
            "4",
            "--concurrency",
            "2",
            "-q",
        ]
        + (["--binary"] if binary else [])
    )
    headers = json.loads(out.read_text().splitlines()[0])["parameters"]["hspi_query"]["headers"]
    assert ("inference-header-content-length" in headers) == binary  # kserve answered in binary
    db = ReferenceDB(tmp_path / "db", create=True)
    build(db, model, ps, ["onnxruntime/*/fp32/*"])
    report = match(load_suspect(out), db)
    assert report.verdict.status == "identified (exact)", report.verdict


def test_kserve_traffic_log_is_replayed(kserve_url, probes, tmp_path, hspi, capsys):
    """Production traffic through KServe's own server on inputs in no probe set, logged by a
    proxy as the request and response bodies (paired by id, out of order, batches of 1 and 2):
    `hspi match --replay` runs the DB's platforms on those inputs and names the served one."""
    import httpx

    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB

    model, ps, _ = probes
    db = ReferenceDB(tmp_path / "db", create=True)
    build(db, model, ps, ["onnxruntime/*/fp32/*", "onnxruntime/*/fp16/bs=1,*"])
    rng = np.random.default_rng(11)
    spec = model.inputs[0]
    requests, responses = [], []
    for k in range(6):
        x = rng.beta(2, 5, size=(1 + k % 2, *spec.shape)).astype(np.float32)
        body = {
            "id": f"req-{k}",
            "inputs": [{"name": spec.name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        }
        resp = httpx.post(f"{kserve_url}/v2/models/digits/infer", json=body, timeout=30)
        resp.raise_for_status()
        requests.append(json.dumps(body))
        responses.append(resp.text.strip())
    log = tmp_path / "traffic.jsonl"
    log.write_text("\n".join(requests + responses[::-1]) + "\n")
    capsys.readouterr()
    hspi(["match", str(log), "--db", str(db.root), "--replay", "--model", str(model.path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["suspect"]["queries"] == 9 and report["replay"]["inputs"] == 9
    assert report["verdict"]["status"] == "identified (exact)", report["verdict"]
    assert all("/fp32/" in p for p in report["verdict"]["platforms"])
    assert report["db"]["platforms"] == len(report["replay"]["platforms"]) > 1  # the replay group: what ran


if __name__ == "__main__":
    serve_kserve(sys.argv[1], int(sys.argv[2]))


def test_openai_protocol_faults_lose_nothing(fault_server, tmp_path):
    """Batches of token-id prompts; a 429 retried; answers without token ids, without logprobs,
    with a positive log-probability or as an HTML page are refused by name, and the answers
    received before stay in the file and are not asked again."""
    from hspi_onnx.inputs.probes import ProbeSet

    ps = ProbeSet(
        "prompts",
        "tokens",
        0,
        "probe",
        {"tokens": np.arange(48, dtype=np.int64).reshape(6, 8) % 256},
        np.arange(6, dtype=np.int64),
    )
    out = tmp_path / "lp.jsonl"
    opts = QueryOptions(fault_server.url + "/v1", "m", "openai", batch=2, top_logprobs=3, backoff=0.01)
    fault_server.plan = ["ok", "429", "noids"]
    with pytest.raises(QueryError, match="comes without its id"):
        query(ps, out, opts)
    assert len(out.read_text().splitlines()) == 2  # the first batch of two
    for fault, message in (("nolp", "no logprobs"), ("positive", "at most 0"), ("500html", "HTML page")):
        fault_server.plan = [fault]
        with pytest.raises(QueryError, match=message):
            query(ps, out, QueryOptions(**{**opts.__dict__, "retries": 0}))
    fault_server.plan = []
    posts = fault_server.posts
    summary = query(ps, out, opts)
    assert (summary.before, summary.asked, fault_server.posts - posts) == (2, 4, 2)
    suspect = load_suspect(out)
    assert suspect.form == "logprobs" and suspect.ids.tolist() == list(range(6))
    assert suspect.index[0].tolist() == [0, 1, 2] and (suspect.values <= 0).all()
    with pytest.raises(QueryError, match="not one of token ids|holds float32"):
        query(
            ProbeSet("x", "noise", 0, "probe", {"x": np.zeros((2, 3), np.float32)}, np.arange(2)),
            tmp_path / "f.jsonl",
            opts,
        )
