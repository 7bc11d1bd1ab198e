import json
import signal
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import hspi as hspi_run
from hspi_onnx.db.build import build, shard_table
from hspi_onnx.db.report import classes, info, verify
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.inputs.probes import generate
from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult, from_storage


def hspi(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "hspi_onnx.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8])
def test_shards_store_outputs_bit_for_bit(tmp_path, dtype):
    raw = np.random.default_rng(1).integers(0, 256, size=(6, 10 * np.dtype(dtype).itemsize), dtype=np.uint8)
    outputs = raw.view(dtype)
    second = np.arange(6 * 4, dtype=np.float32).reshape(6, 2, 2)
    plat = Platform.make("x", "1", "cpu", "fp32", bs=1)
    res = RunResult(str(plat), "m" * 64, "m", "p", "p" * 64, np.arange(6), {"logits": outputs, "hidden": second})
    db = ReferenceDB(tmp_path / "db", create=True)
    path = db.shard_path("m" * 64, "p" * 64, str(plat), "r1")
    db.write_shard(path, shard_table(res, plat, "r1", True))
    d = pq.read_table(path).to_pydict()
    assert d["output_name"] == ["logits"] * 6 + ["hidden"] * 6  # one row per (output, probe)
    assert d["probe_id"] == list(range(6)) * 2 and d["shape"][6] == [2, 2]
    logits = b"".join(d["output"][:6])
    assert logits == outputs.tobytes() and b"".join(d["output"][6:]) == second.tobytes()
    name = d["dtype"][0]
    restored = from_storage(np.frombuffer(logits, dtype={"bfloat16": np.uint16}.get(name, name)), name)
    assert restored.dtype == outputs.dtype and restored.tobytes() == outputs.tobytes()
    assert [g.hex() for g in d["digest"]] == res.digests()["logits"] + res.digests()["hidden"]


def test_build_resume_info_classes_verify(tmp_path, zoo):
    db = ReferenceDB(tmp_path / "db", create=True)
    probes = generate(zoo["digits"], n=8)
    first = build(db, zoo["digits"], probes, ["onnxruntime/*/fp32/bs=1"])
    assert len(first.built) == 8 and not first.failed and not first.nondeterministic
    again = build(db, zoo["digits"], probes, ["onnxruntime/*/fp32"])
    assert len(again.skipped) == 8 and len(again.built) == 8
    report = info(db)
    assert report["rows"] == 16 * 8 and report["platforms"] == 16 and report["shards"] == 16
    (group,) = classes(db)
    assert sum(len(c["platforms"]) for c in group["classes"]) == 16
    sep = np.array(group["separation"])
    assert np.all(np.diag(sep) == 0) and np.all(sep[~np.eye(len(sep), dtype=bool)] > 0)
    assert verify(db)["ok"]


def test_failed_platform_is_recorded_and_build_goes_on(tmp_path):
    from test_adapters import _tiny_onnx

    model = _tiny_onnx(tmp_path / "hardmax.onnx", op="Hardmax", opset=11)  # ORT runs it; the converter cannot
    proc = hspi(
        "db", "build", model, "--db", tmp_path / "db", "-n", "4", "-p", "*/*/fp32/bs=1,threads=1", "--json", "-q"
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    summary = json.loads(out)
    # built: ONNX Runtime's four optimization levels and OpenVINO; failed: the torch converter
    assert summary["partial"] and len(summary["built"]) == 5
    assert all("Hardmax-11" in reason for reason in summary["failed"].values())
    manifest = json.loads((tmp_path / "db" / "manifest.json").read_text())
    assert {f["platform"] for f in manifest["failures"]} == set(summary["failed"])
    assert verify(ReferenceDB(tmp_path / "db"))["ok"]


def test_sigkill_mid_build_then_resume(tmp_path, zoo):
    db_dir = tmp_path / "db"
    args = ("db", "build", "mobilenet", "--db", db_dir, "-n", "16", "-p", "onnxruntime/*/*/bs=1", "-q")
    proc = hspi(*args)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(db_dir.glob("shards/*/*/*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(db_dir.glob("shards/*/*/*.parquet")))
    assert 3 <= done_before < 32
    assert verify(ReferenceDB(db_dir))["ok"]
    proc = hspi(*args, "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert len(summary["skipped"]) == done_before and len(summary["built"]) == 32 - done_before
    report = verify(ReferenceDB(db_dir))
    assert report["ok"] and report["shards"] == 32 and report["rows"] == 32 * 16
    assert not list(db_dir.glob("shards/*/*/.*.tmp"))


def test_concurrent_builds_both_land(tmp_path, zoo):
    db_dir = tmp_path / "db"
    procs = [
        hspi("db", "build", "digits", "--db", db_dir, "-n", "8", "-p", g, "-q", "--json")
        for g in ("onnxruntime/*/fp16", "onnxruntime/*/fp32")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert [len(json.loads(o[0])["built"]) for o in outs] == [16, 16]
    db = ReferenceDB(db_dir)
    assert len(db.manifest().runs) == 2 and len(db.manifest().platforms) == 32
    report = verify(db)
    assert report["ok"] and report["shards"] == 32


def test_verify_catches_corruption(tmp_path, zoo):
    db = ReferenceDB(tmp_path / "db", create=True)
    build(db, zoo["digits"], generate(zoo["digits"], n=4), ["onnxruntime/*/fp32/bs=1,opt=all"])
    a, b = db.shards()
    table = pq.read_table(a)
    outputs = table.column("output").to_pylist()
    outputs[2] = bytes([outputs[2][0] ^ 1]) + outputs[2][1:]  # one flipped bit
    pq.write_table(
        table.set_column(table.schema.get_field_index("output"), "output", pa.array(outputs, pa.binary())), a
    )
    b.write_bytes(b.read_bytes()[:100])  # truncated
    report = verify(db)
    assert not report["ok"]
    assert any("1 of 4 outputs fail their digests" in p for p in report["problems"])
    assert any("unreadable" in p for p in report["problems"])
    proc = hspi("db", "verify", "--db", db.root)
    proc.communicate(timeout=120)
    assert proc.returncode == 1


def test_sql_over_shards(tmp_path, zoo, capsys):
    from hspi_onnx.cli import main

    db = ReferenceDB(tmp_path / "db", create=True)
    build(db, zoo["digits"], generate(zoo["digits"], n=4), ["onnxruntime/*/fp32/bs=1,opt=all"])
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "db",
                "sql",
                "SELECT platform, count(*) AS n FROM outputs GROUP BY platform ORDER BY platform",
                "--db",
                str(db.root),
                "--json",
            ]
        )
    assert exc.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["n"] for r in rows] == [4, 4]
    with pytest.raises(SystemExit) as exc:
        main(["db", "sql", "SELEC nonsense", "--db", str(db.root)])
    assert exc.value.code == 2


def _rewrite_outputs(path, change):
    """Rewrite a shard with changed outputs and matching digests (a valid shard from a
    platform that computed something else)."""
    from hspi_onnx.outputs import digest

    table = pq.read_table(path)
    d = table.to_pydict()
    outputs = [change(i, o) for i, o in enumerate(d["output"])]
    digests = [bytes.fromhex(digest(t, s, o)) for t, s, o in zip(d["dtype"], d["shape"], outputs)]
    for name, values in (("output", outputs), ("digest", digests)):
        table = table.set_column(
            table.schema.get_field_index(name),
            table.schema.field(name),
            pa.array(values, table.schema.field(name).type),
        )
    pq.write_table(table, path)


def test_merge_unions_and_flags_disagreeing_labels(tmp_path, zoo, capsys):
    from hspi_onnx.cli import main

    probes = generate(zoo["digits"], n=6)
    a = ReferenceDB(tmp_path / "a", create=True)
    b = ReferenceDB(tmp_path / "b", create=True)
    build(a, zoo["digits"], probes, ["onnxruntime/*/fp32/bs=1,opt=all"])
    build(b, zoo["digits"], probes, ["onnxruntime/*/fp32/bs=1,opt=all,threads=1", "onnxruntime/*/fp16/bs=1,opt=all"])
    label = next(lb for lb in b.manifest().platforms if "fp32" in lb)
    (shard,) = b.existing_shards(a.manifest().models.popitem()[0], probes.sha256, label)
    _rewrite_outputs(shard, lambda i, o: bytes([o[0] ^ 1]) + o[1:] if i in (1, 4) else o)
    with pytest.raises(SystemExit) as exc:
        main(["db", "merge", str(a.root), str(b.root), "-o", str(tmp_path / "c"), "--json"])
    assert exc.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards_copied"] == 2 + 3
    (conflict,) = report["conflicts"]
    assert conflict["platform"] == label and conflict["probes_differing"] == 2 and len(conflict["runs"]) == 2
    c = ReferenceDB(tmp_path / "c")
    assert verify(c)["ok"] and len(c.existing_shards(conflict["model_sha256"], probes.sha256, label)) == 2
    assert any(e.platform == label and "merge" in e.reason for e in c.manifest().nondeterministic)
    assert any(label in cl["nondeterministic"] for g in classes(c) for cl in g["classes"])
    again = json.loads(hspi_run("db", "merge", a.root, "-o", c.root, "--json").stdout)
    assert again["shards_copied"] == 0 and again["shards_identical"] == 2


def test_batch_dependent_platforms_are_recorded_and_explained(tmp_path, zoo):
    """int8 dynamic quantisation computes one activation scale per batch: the build records that
    the first probe alone in its batch (padded with copies) gives other bits; fp32 is not flagged.
    A suspect served one probe per request by the bs=8 platform matches its bs=1 sibling, and the
    verdict says why the bs=8 platform is not named."""
    from hspi_onnx.inputs.probes import ProbeSet
    from hspi_onnx.match.identify import match
    from hspi_onnx.match.suspect import load_suspect, write_npz
    from hspi_onnx.run.adapter import resolve_platform
    from hspi_onnx.run.runner import execute

    model = zoo["digits"]
    probes = generate(model, n=12)
    int8 = "onnxruntime/*/int8/bs=8,opt=all,quant=dynamic,threads=1"
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(
        db,
        model,
        probes,
        [int8, "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1", "onnxruntime/*/fp32/bs=8,opt=all,threads=1"],
    )
    assert len(summary.built) == 3 and [short.split("/")[2:] for short in summary.batch_dependent] == [
        ["int8", "bs=8,opt=all,quant=dynamic,threads=1"]
    ]
    assert [e.platform for e in db.manifest().batch_dependent] == summary.batch_dependent
    adapter, plat = resolve_platform(int8, model, probes.kind)
    alone = [
        execute(
            adapter,
            model,
            plat,
            ProbeSet(
                "one",
                probes.kind,
                0,
                "probe",
                {k: v[i : i + 1] for k, v in probes.inputs.items()},
                probes.ids[i : i + 1],
            ),
        ).first[0]
        for i in range(len(probes))
    ]
    write_npz(tmp_path / "s.npz", probes.sha256, model.sha256, probes.ids, np.stack(alone))
    rep = match(load_suspect(tmp_path / "s.npz"), db)
    assert rep.verdict.platforms == [str(plat.with_knobs(bs="1"))]
    assert rep.evidence.batch_dependent == summary.batch_dependent
    assert str(plat) not in rep.verdict.platforms
    assert any("depending on what shares its batch" in line for line in rep.verdict.evidence)


def test_load_groups_skips_a_shard_without_the_chosen_output():
    """A shard whose model the manifest does not list, asked for an output it lacks, is skipped
    like an empty shard (it once left an empty group behind: KeyError)."""
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.errors import HspiError

    class Manifest:
        def output_names(self, sha):
            return []

    class DB:
        schema, root = 2, "db"

        def manifest(self):
            return Manifest()

        def shards(self):
            return ["shard"]

        def read_shard(self, path, columns, filters=None):
            if filters is None:
                cols = {"model_sha256": "m", "model_name": "mod", "probes_sha256": "p", "probes_name": "pn"}
                return pa.table({**{k: [v] for k, v in cols.items()}, "platform": ["plat"]})
            return pa.table({c: pa.array([], pa.string()) for c in columns})

    with pytest.raises(HspiError, match="holds no outputs of mod"):
        load_groups(DB(), models=["mod"], output="absent")
