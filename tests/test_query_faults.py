"""Issue 14's fault test: `hspi query` against a real `hspi serve` that is SIGKILLed mid-query.

The query fails with one line and keeps every answer it had; the server is restarted on the same
port (the resume check compares URLs), the same command is run again, and the resumed file is
complete and identical to an uninterrupted query into a fresh file: same probe ids, same output
bytes as the suspect reader loads them, same responses line by line (bar latency metadata).
Every loop is bounded; every subprocess is killed in teardown."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from hspi_onnx.inputs.model import resolve_model  # noqa: E402
from hspi_onnx.inputs.probes import generate  # noqa: E402
from hspi_onnx.match.suspect import load_suspect  # noqa: E402
from hspi_onnx.query.resume import KEY  # noqa: E402
from hspi_onnx.serve.process import ServerProcess, free_port  # noqa: E402

PLATFORM = "onnxruntime/*/fp32/bs=1,opt=all,threads=1"
N = 32
RATE = 25  # requests per second: the query takes ~1.3 s, long enough to kill the server mid-way
STARTUP = 120  # seconds a server may take to print its port and become ready (bounded waits)


@pytest.fixture
def started():
    """Start servers and queries through this; all are killed at teardown."""
    procs: list = []
    yield procs
    for p in procs:
        if isinstance(p, ServerProcess):
            p.kill()
        elif p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def _query_argv(url: str, probes: Path, out: Path, rate: float | None = None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "hspi_onnx.cli",
        "query",
        url,
        "-m",
        "digits",
        "--probes",
        str(probes),
        "-o",
        str(out),
        "--batch",
        "1",
        "--retries",
        "0",
        "--timeout",
        "30",
        "--quiet",
    ]
    return argv + (["--rate", str(rate)] if rate else [])


def _run_query(argv: list[str], started: list) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(proc)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _without_latency(line: bytes) -> dict:
    doc = json.loads(line)
    ours = doc["parameters"][KEY]
    for volatile in ("latency_s", "headers", "attempts"):
        ours.pop(volatile, None)
    return doc


@pytest.mark.slow
def test_a_query_resumes_after_the_server_is_killed_and_restarted(tmp_path, started):
    probes = generate(resolve_model("digits"), n=N).save(tmp_path / "p.npz")
    port = free_port()  # fixed up front: the restarted server must have the same URL
    server = ServerProcess("digits", PLATFORM, port)
    started.append(server)
    server.wait(STARTUP)
    assert server.url == f"http://127.0.0.1:{port}"

    # -- kill the server while the query is half-way ---------------------------------------
    out = tmp_path / "s.jsonl"
    argv = _query_argv(server.url, probes, out, rate=RATE)
    query = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(query)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and query.poll() is None and len(_lines(out)) < 4:
        time.sleep(0.005)
    assert query.poll() is None, f"the query ended before the kill: {query.communicate()}"
    server.kill()
    _, err = query.communicate(timeout=60)
    kept = _lines(out)
    assert query.returncode == 2, err
    assert 0 < len(kept) < N, len(kept)
    error = err.strip()
    assert "\n" not in error and error.startswith("error: "), error
    assert server.url in error and ("connection failed" in error or "truncated" in error), error
    assert "Traceback" not in err

    # every line kept is a whole answer, each probe answered at most once, in order of ids
    kept_ids = [json.loads(line)["parameters"]["probe_ids"][0] for line in kept]
    assert kept_ids == list(range(len(kept)))

    # -- restart on the same port; the same command completes the file ---------------------
    server = ServerProcess("digits", PLATFORM, port)
    started.append(server)
    server.wait(STARTUP)
    assert server.url == f"http://127.0.0.1:{port}"
    resumed = _run_query(argv, started)
    assert resumed.returncode == 0, resumed.stderr
    said = " ".join(resumed.stderr.split())  # the console wraps long lines
    assert f"{N - len(kept)} probes answered in {N - len(kept)} requests, {len(kept)} already there" in said, said

    # -- an uninterrupted query into a fresh file --------------------------------------------
    fresh = tmp_path / "fresh.jsonl"
    whole = _run_query(_query_argv(server.url, probes, fresh), started)
    assert whole.returncode == 0, whole.stderr

    lines, ref_lines = _lines(out), _lines(fresh)
    assert lines[: len(kept)] == kept  # nothing received before the kill was rewritten or lost
    assert len(lines) == len(ref_lines) == N
    assert [_without_latency(a) for a in lines] == [_without_latency(b) for b in ref_lines]

    got, ref = load_suspect(out), load_suspect(fresh)
    assert got.ids.tolist() == ref.ids.tolist() == list(range(N))
    assert got.probes == ref.probes and list(got.outputs) == list(ref.outputs)
    for name in ref.outputs:
        assert got.outputs[name].dtype == ref.outputs[name].dtype
        assert got.outputs[name].tobytes() == ref.outputs[name].tobytes()
    assert np.isfinite(ref.outputs[next(iter(ref.outputs))]).all()

    # a rerun of the finished query asks nothing and changes nothing
    again = _run_query(argv, started)
    assert again.returncode == 0, again.stderr
    assert _lines(out) == lines
