"""Distributed builds (hspi db build --ray) on a real local Ray cluster: a head node and a worker
node started with `ray start` as separate processes on this machine, stopped at the end.

The worker node is started as another machine would differ: with an instruction-set cap
(HSPI_ISA_CAP, where this CPU is above AVX2) and without OpenVINO and the ONNX reference
(HSPI_RUNTIMES). The DB must equal, bit for bit, what local builds under the same settings give.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from hspi_onnx.db.build import build  # noqa: E402
from hspi_onnx.db.store import ReferenceDB  # noqa: E402
from hspi_onnx.host import isa_caps  # noqa: E402
from hspi_onnx.inputs.model import resolve_model  # noqa: E402
from hspi_onnx.inputs.probes import generate  # noqa: E402

BIN = Path(sys.executable).parent
PATTERNS = ["onnxruntime/*/fp32/bs=8,opt=all,*", "pytorch/*/fp32/*src=onnx,threads=1", "openvino/*/fp32/*",
            "onnxref/*/fp32/*"]
CAP = "avx2" if any(c[0] == "avx2" for c in isa_caps()) else ""
WORKER_ENV = {"HSPI_RUNTIMES": "onnxruntime,pytorch", **({"HSPI_ISA_CAP": CAP} if CAP else {})}
FAST_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
              "RAY_health_check_timeout_ms": "1000"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resources(env: dict) -> str:
    return subprocess.run([str(BIN / "hspi"), "runtimes", "resources"], env=env, capture_output=True, text=True,
                          check=True, timeout=300).stdout.strip()


class LocalCluster:
    """`ray start --head` and worker nodes as process groups of their own (killed whole)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="hspiray-", dir="/tmp")  # unix socket paths must stay short
        self.procs: list[subprocess.Popen] = []
        self.base = {**os.environ, **FAST_DEATH}

    def _start(self, args: list[str], env: dict) -> subprocess.Popen:
        log = open(Path(self.temp) / f"node{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([str(BIN / "ray"), "start", "--num-cpus", "1", "--object-store-memory", "100000000",
                                 "--disable-usage-stats", "--block", *args], env=env, stdout=log, stderr=log,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def head(self) -> None:
        self._start(["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", self.temp,
                     "--resources", _resources(self.base)], self.base)
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray head node did not start")
                time.sleep(0.2)

    def worker(self) -> subprocess.Popen:
        env = {**self.base, **WORKER_ENV}
        return self._start(["--address", self.address, "--resources", _resources(env)], env)

    def wait_nodes(self, n: int) -> None:
        code = ("import ray,time,sys\nray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
                "t=time.monotonic()\nwhile sum(x['Alive'] for x in ray.nodes()) != int(sys.argv[2]):\n"
                "    assert time.monotonic()-t < 120, ray.nodes()\n    time.sleep(0.3)\n")
        subprocess.run([sys.executable, "-c", code, self.address, str(n)], check=True, timeout=180)

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.head()
        c.worker()
        c.wait_nodes(2)
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()


def _rows(db: Path) -> dict:
    con = ReferenceDB(db).connect()
    rows = con.execute("SELECT platform, probe_id, output_name, dtype, output, digest FROM outputs").fetchall()
    return {(p, i, o): (d, v, g) for p, i, o, d, v, g in rows}


def _hspi(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def local_db(tmp_path_factory) -> Path:
    """What the cluster must reproduce: the same platforms built here, the worker node's under
    its own settings."""
    db = tmp_path_factory.mktemp("local") / "db"
    base = ["db", "build", "digits", "--db", db, "-n", 16, "-q"]
    for pattern in PATTERNS:
        proc = _hspi(*base, "-p", pattern)
        assert proc.returncode == 0, proc.stderr
    proc = _hspi(*base, "-p", PATTERNS[1], env=WORKER_ENV)  # the capped platforms of the worker node
    assert proc.returncode == 0, proc.stderr
    return db


def test_two_node_build_equals_local_builds_and_names_each_nodes_device(cluster, local_db, tmp_path):
    db = tmp_path / "db"
    proc = _hspi("db", "build", "digits", "--db", db, "-n", 16, "--ray", cluster.address, "--json",
                 *[a for p in PATTERNS for a in ("-p", p)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert not report["failed"] and len(report["nodes"]) == 2
    by_node = {n["node"]: n for n in report["nodes"]}
    worker = next(n for n in by_node.values() if "openvino" in n["unavailable"])
    head = next(n for n in by_node.values() if n is not worker)
    assert "HSPI_RUNTIMES" in worker["unavailable"]["openvino"]
    got, want = _rows(db), _rows(local_db)
    assert got.keys() == want.keys() and got == want  # bit for bit, every (platform, probe, output)
    con = ReferenceDB(db).connect()
    ran = dict(con.execute("SELECT platform, any_value(json_extract_string(host, '$.ray_node')) FROM outputs "
                           "GROUP BY platform").fetchall())
    assert set(ran.values()) == set(by_node)  # both nodes ran platforms
    assert all(ran[lab] == head["node"] for lab in ran if lab.startswith(("openvino", "onnxref")))
    if CAP:  # the capped node's PyTorch platforms carry its capped device and ran there
        capped = {lab for lab in ran if lab.startswith("pytorch") and f"/cpu:{CAP}:" in lab}
        assert capped and all(ran[lab] == worker["node"] for lab in capped)
        assert any(lab.startswith("pytorch") and f"/cpu:{head['isa']}:" in lab for lab in ran)
    # platforms both nodes offer (ONNX Runtime) were run again on the other node and agreed
    checked = report["cross_checked"]
    assert checked and all(c["differing"] == 0 and len(set(c["nodes"])) == 2 for c in checked.values())
    assert all(lab.startswith("onnxruntime") for lab in checked)


def _worker_id(runner) -> str:
    return next(n["node"] for n in runner.report()["nodes"] if "openvino" in n["unavailable"])


def test_worker_node_killed_mid_build_then_rerun_completes(cluster, local_db, tmp_path):
    from hspi_onnx.run.cluster import RayRunner

    db = ReferenceDB(tmp_path / "db", create=True)
    model = resolve_model("digits")
    probes = generate(model, n=16)

    # 1. the worker dies as a platform both nodes offer starts there: it runs again on the head
    victim, notes = cluster.procs[-1], []
    with RayRunner(cluster.address, on_note=notes.append) as runner:
        plan = runner.plan(model, probes, PATTERNS[:1], False)
        worker = _worker_id(runner)

        def kill_at_start(kind: str, data: dict) -> None:
            if kind == "start" and data["node"] == worker:
                cluster.kill(victim)

        shared = build(db, model, probes, None, kill_at_start, runner=runner, plan=plan)
        assert runner.report()["nodes_lost"] == [worker]
    assert victim.poll() is not None
    assert not shared.failed and len(shared.built) == len(plan) == 2
    assert any("run again elsewhere" in line for line in notes), notes

    # 2. the worker dies after the first platform is in: its own platforms fail, the head's go on
    cluster.worker()
    cluster.wait_nodes(2)
    victim = cluster.procs[-1]

    def kill_after_first(kind: str, data: dict) -> None:
        if kind == "built" and victim.poll() is None:
            cluster.kill(victim)

    with RayRunner(cluster.address) as runner:
        plan = runner.plan(model, probes, PATTERNS, False)
        first = build(db, model, probes, None, kill_after_first, runner=runner, plan=plan)
        assert len(runner.report()["nodes_lost"]) == 1
    assert len(first.built) + len(first.failed) + len(first.skipped) == len(plan)
    assert all("no live node" in r or "lost with node" in r for r in first.failed.values())
    assert not any(lab.startswith(("openvino", "onnxref")) for lab in first.failed)
    if CAP:
        assert first.failed  # the capped platforms only the worker offered

    # 3. rerun with the worker back: the DB is complete, bit for bit what the local builds give
    cluster.worker()
    cluster.wait_nodes(2)
    with RayRunner(cluster.address) as runner:
        second = build(db, model, probes, None, runner=runner, plan=runner.plan(model, probes, PATTERNS, False))
    assert not second.failed and sorted(second.built) == sorted(first.failed)
    assert _rows(db.root) == _rows(local_db)


def test_bad_address_is_one_line_and_local_builds_never_import_ray(tmp_path):
    proc = _hspi("db", "build", "digits", "--db", tmp_path / "db", "-n", 4, "--ray", "127.0.0.1:1")
    assert proc.returncode == 2 and "Ray cluster" in proc.stderr and "Traceback" not in proc.stderr
    code = ("import sys\nfrom hspi_onnx.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nprint('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, "db", "build", "digits", "--db", str(tmp_path / "l"), "-n", "4",
                          "-q", "-p", "onnxref/*/fp32/*"], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
