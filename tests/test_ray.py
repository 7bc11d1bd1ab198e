"""Distributed builds (hspi db build --ray) on a real local Ray cluster: a head node and a worker
node started with `ray start` as separate processes on this machine, stopped at the end.

The worker node is started as another machine would differ: with an instruction-set cap
(HSPI_ISA_CAP, where this CPU is above AVX2) and without OpenVINO and the ONNX reference
(HSPI_RUNTIMES). The DB must equal, bit for bit, what local builds under the same settings give.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a real 2-node cluster: about 80 s for the module

from conftest import hspi  # noqa: E402
from hspi_onnx.cache import cache_dir  # noqa: E402
from hspi_onnx.db.build import build  # noqa: E402
from hspi_onnx.db.store import ReferenceDB  # noqa: E402
from hspi_onnx.host import isa_caps  # noqa: E402
from hspi_onnx.inputs.model import resolve_model  # noqa: E402
from hspi_onnx.inputs.probes import generate  # noqa: E402
from hspi_onnx.run.ray_local import LocalCluster  # noqa: E402

PATTERNS = [
    "onnxruntime/*/fp32/bs=8,opt=all,*",
    "pytorch/*/fp32/*src=onnx,threads=1",
    "openvino/*/fp32/*",
    "onnxref/*/fp32/*",
]
CAP = "avx2" if any(c[0] == "avx2" for c in isa_caps()) else ""
WORKER_ENV = {"HSPI_RUNTIMES": "onnxruntime,pytorch", **({"HSPI_ISA_CAP": CAP} if CAP else {})}


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.head()
        c.worker(WORKER_ENV)
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


@pytest.fixture(scope="module")
def local_db(tmp_path_factory) -> Path:
    """What the cluster must reproduce: the same platforms built here, the worker node's under
    its own settings."""
    db = tmp_path_factory.mktemp("local") / "db"
    base = ["db", "build", "digits", "--db", db, "-n", 16, "-q"]
    for pattern in PATTERNS:
        proc = hspi(*base, "-p", pattern)
        assert proc.returncode == 0, proc.stderr
    proc = hspi(*base, "-p", PATTERNS[1], env={**os.environ, **WORKER_ENV})  # the capped platforms of the worker node
    assert proc.returncode == 0, proc.stderr
    return db


def test_two_node_build_equals_local_builds_and_names_each_nodes_device(cluster, local_db, tmp_path):
    db = tmp_path / "db"
    proc = hspi(
        "db",
        "build",
        "digits",
        "--db",
        db,
        "-n",
        16,
        "--ray",
        cluster.address,
        "--json",
        *[a for p in PATTERNS for a in ("-p", p)],
    )
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
    ran = dict(
        con.execute(
            "SELECT platform, any_value(json_extract_string(host, '$.ray_node')) FROM outputs GROUP BY platform"
        ).fetchall()
    )
    assert set(ran.values()) == set(by_node)  # both nodes ran platforms
    assert all(ran[lab] == head["node"] for lab in ran if lab.startswith(("openvino", "onnxref")))
    if CAP:  # the capped node's PyTorch platforms carry its capped device and ran there
        capped = {lab for lab in ran if lab.startswith("pytorch") and f"/cpu:{CAP}:" in lab}
        assert capped and all(ran[lab] == worker["node"] for lab in capped)
        assert any(lab.startswith("pytorch") and f"/cpu:{head['isa']}:" in lab for lab in ran)
        # the nodes differ in measured state, and the build says so: PyTorch's device and ISA knobs
        facts = {d["fact"] for d in report["differences"] if d["runtime"] == "pytorch"}
        assert {"device", "aten", "onednn"} <= facts, report["differences"]
        assert "nodes differ in measured state: pytorch" in proc.stderr + proc.stdout
    # platforms both nodes offer (ONNX Runtime) were run again on the other node and agreed
    checked = report["cross_checked"]
    assert checked and all(c["differing"] == 0 and len(set(c["nodes"])) == 2 for c in checked.values())
    assert all(lab.startswith("onnxruntime" if CAP else ("onnxruntime", "pytorch")) for lab in checked)


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
    cluster.wait_nodes(1)  # the killed node marked dead first, else the count of 2 is reached at once
    cluster.worker(WORKER_ENV)
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
    cluster.wait_nodes(1)
    cluster.worker(WORKER_ENV)
    cluster.wait_nodes(2)
    with RayRunner(cluster.address) as runner:
        second = build(db, model, probes, None, runner=runner, plan=runner.plan(model, probes, PATTERNS, False))
    assert not second.failed and sorted(second.built) == sorted(first.failed)
    assert _rows(db.root) == _rows(local_db)


def test_ray_client_address_builds_the_same(cluster, local_db, tmp_path):
    db = tmp_path / "db"
    proc = hspi("db", "build", "digits", "--db", db, "-n", 16, "--ray", cluster.client_address, "-q", "-p", PATTERNS[3])
    assert proc.returncode == 0, proc.stderr
    got, want = _rows(db), _rows(local_db)
    assert got and got == {k: v for k, v in want.items() if k[0] in {p for p, _, _ in got}}


def test_bad_address_is_one_line_and_local_builds_never_import_ray(tmp_path):
    proc = hspi("db", "build", "digits", "--db", tmp_path / "db", "-n", 4, "--ray", "127.0.0.1:1")
    assert proc.returncode == 2 and "Ray cluster" in proc.stderr and "Traceback" not in proc.stderr
    code = (
        "import sys\nfrom hspi_onnx.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\nprint('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "db",
            "build",
            "digits",
            "--db",
            str(tmp_path / "l"),
            "-n",
            "4",
            "-q",
            "-p",
            "onnxref/*/fp32/*",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_language_model_build_on_the_cluster_equals_local(cluster, tmp_path):
    """SmolLM2's llama.cpp platforms run on the cluster (the head: the worker node has no
    llama.cpp) through the same workers; the DB equals a local build bit for bit. The model
    (539 MB) goes through the object store once: a node whose cache holds it fetches nothing."""
    pytest.importorskip("llama_cpp")
    probes, local, remote = tmp_path / "chats.npz", tmp_path / "local", tmp_path / "remote"
    proc = hspi("probes", "make", "smollm2", "-n", "2", "-o", probes)
    assert proc.returncode == 0, proc.stderr
    globs = ["-p", "llamacpp/*/q8_0/*fa=off,*threads=1,*", "-p", "llamacpp/*/q4_0/*fa=on,*threads=1,*"]
    proc = hspi("db", "build", "smollm2", "--db", local, "--probes", probes, "-q", *globs)
    assert proc.returncode == 0, proc.stderr
    ray_build = ["db", "build", "smollm2", "--probes", probes, "--ray", cluster.address, "--json"]
    shutil.rmtree(cache_dir("cluster"))  # the nodes share this process's cache: an earlier run's copy goes
    proc = hspi(*ray_build, "--db", remote, *globs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got, want = _rows(remote), _rows(local)
    assert got == want and len({p for p, _, _ in got}) == 2
    report = json.loads(proc.stdout)
    assert report["model_sent"] and "fetched" in {n["model"] for n in report["nodes"]}
    # the nodes' caches now hold the model (539 MB): a second build sends and fetches nothing, same bits
    proc = hspi(*ray_build, "--db", tmp_path / "again", *globs[:2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert not report["model_sent"] and {n["model"] for n in report["nodes"]} == {"cached"}
    assert _rows(tmp_path / "again") == {k: v for k, v in want.items() if "q8_0" in k[0]}


def test_a_model_the_object_store_cannot_take_is_one_line(tmp_path):
    """A model larger than the head's object store, on a disk Ray will not spill to (as CI's
    disk once was: 95 % full), is a user error naming both remedies, not Ray's traceback."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 400_000)).astype(np.float32)  # 102 MB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 400_000])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    with LocalCluster(object_store_bytes=80_000_000) as small:
        small.head({"RAY_local_fs_capacity_threshold": "0"})  # every spill refused
        small.wait_nodes(1)
        proc = hspi(
            "db", "build", tmp_path / "big.onnx", "--db", tmp_path / "db", "-n", 2, "-q", "--ray", small.address
        )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "object store" in line and "102 MB" in line and "--object-store-memory" in line, line
