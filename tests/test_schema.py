"""DB schema 2 (every output of a model, named) and DBs written before it (schema 1)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.report import classes, info, verify
from hspi_onnx.db.store import SCHEMA_VERSION, ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.inputs.probes import generate
from hspi_onnx.match.identify import IDENTIFIED, match
from hspi_onnx.match.suspect import BadSuspectError, load_suspect, write_kserve, write_npz, write_plain
from hspi_onnx.run.adapter import selected_variants
from hspi_onnx.run.runner import execute

DATA = Path(__file__).parent / "data"
V1_PLATFORMS = 2


@pytest.fixture
def v1(tmp_path):
    """A writable copy of tests/data/db-v1, written by the code before schema 2."""
    return ReferenceDB(shutil.copytree(DATA / "db-v1", tmp_path / "db-v1"))


def test_a_schema_1_db_is_read_as_it_is(v1):
    assert v1.schema == 1
    report = info(v1)
    assert report["schema"] == 1 and report["platforms"] == V1_PLATFORMS and report["rows"] == V1_PLATFORMS * 8
    assert [g["outputs"] for g in report["groups"]] == [["logits"]]
    assert verify(v1)["ok"]
    (group,) = classes(v1)
    assert group["outputs"] == ["logits"] and group["n_platforms"] == V1_PLATFORMS
    (g,) = load_groups(v1)
    assert g.output_name == "logits" and all(a.shape == (8, 10) for a in g.outputs.values())
    rep = match(load_suspect(DATA / "db-v1-suspect.npz"), v1)  # written by `hspi run` back then
    assert rep.verdict.status == IDENTIFIED and len(rep.verdict.platforms) == 1
    assert "fp16" in rep.verdict.platforms[0] and rep.evidence.suspect.outputs == ["logits"]


def test_writing_into_a_schema_1_db_asks_for_an_upgrade_first(v1, zoo):
    with pytest.raises(HspiError, match=r"schema 1 .*`hspi db upgrade --db"):
        build(v1, zoo["digits"], generate(zoo["digits"], n=8), ["onnxruntime/*/fp32/bs=1,opt=all,threads=1"])
    assert verify(v1)["ok"] and v1.schema == 1  # nothing written


def test_upgrade_rewrites_shards_and_keeps_every_digest(v1, zoo, capsys):
    from hspi_onnx.cli import main

    before = sorted(map(tuple, v1.connect().execute("SELECT platform, probe_id, digest FROM outputs").fetchall()))
    with pytest.raises(SystemExit) as exc:
        main(["db", "upgrade", "--db", str(v1.root), "--json"])
    assert exc.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"db": str(v1.root), "from": 1, "to": SCHEMA_VERSION, "shards_rewritten": V1_PLATFORMS}
    db = ReferenceDB(v1.root)
    assert db.schema == SCHEMA_VERSION and verify(db)["ok"]
    after = sorted(map(tuple, db.connect().execute("SELECT platform, probe_id, digest FROM outputs").fetchall()))
    assert after == before
    assert match(load_suspect(DATA / "db-v1-suspect.npz"), db).verdict.status == IDENTIFIED
    # writable now: the same probe set (its hash is unchanged), one more platform; in the same group
    # where this machine's digits is the v1 DB's (the zoo trains it here: its weights follow the CPU)
    summary = build(db, zoo["digits"], generate(zoo["digits"], n=8), ["onnxruntime/*/fp32/bs=8,opt=all,threads=1"])
    same_model = zoo["digits"].sha256 in db.manifest().models and len(db.manifest().models) == 1
    groups = load_groups(db)
    assert len(summary.built) == 1 and len(groups) == (1 if same_model else 2) and verify(db)["ok"]
    assert len({g.probes_sha256 for g in groups}) == 1


def test_verify_says_why_a_db_cannot_be_read(tmp_path):
    db_dir = shutil.copytree(DATA / "db-v1", tmp_path / "future")
    manifest = json.loads((db_dir / "manifest.json").read_text())
    manifest["schema"] = 99
    (db_dir / "manifest.json").write_text(json.dumps(manifest))
    report = verify(ReferenceDB(db_dir))
    assert not report["ok"] and report["problems"] == [
        f"manifest of {str(db_dir)!r} is schema version 99; this version reads 1, 2"
    ]


# -- several inputs and outputs -------------------------------------------------------------
PLATFORMS = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "pytorch/*/fp32/bs=1,src=onnx,threads=1",
    "onnxref/*/fp64/bs=1",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from hspi_onnx.inputs.model import resolve_model
    from test_probes import _encoder

    root = tmp_path_factory.mktemp("enc")
    model = resolve_model(_encoder(root / "enc.onnx"))
    probes = generate(model, n=12, dims={"sequence": 6})
    db = ReferenceDB(root / "db", create=True)
    summary = build(db, model, probes, PLATFORMS)
    assert len(summary.built) == len(PLATFORMS) and not summary.failed, summary.failed
    return {"root": root, "model": model, "probes": probes, "db": db, "built": summary.built}


def test_every_output_is_stored_and_named(encoder):
    db = encoder["db"]
    assert verify(db)["ok"]
    (g,) = classes(db)
    assert g["outputs"] == ["hidden", "pooled"]
    rows = (
        db.connect()
        .execute("SELECT output_name, count(*), any_value(shape) FROM outputs GROUP BY ALL ORDER BY output_name")
        .fetchall()
    )
    assert [(r[0], r[1], list(r[2])) for r in rows] == [("hidden", 4 * 12, [6, 4]), ("pooled", 4 * 12, [4])]
    hidden, pooled = (load_groups(db, None, name)[0] for name in ("hidden", "pooled"))
    assert hidden.output_name == "hidden" and pooled.output_name == "pooled"
    label = next(lb for lb in encoder["built"] if "onnxref" in lb)
    assert hidden.outputs[label].dtype == np.float64 and hidden.outputs[label].shape == (12, 6, 4)
    # pooled is the sum of hidden over the sequence: the DB holds both, consistently
    assert np.allclose(hidden.outputs[label].sum(axis=1), pooled.outputs[label], rtol=1e-12)


def _fresh(encoder, pattern):
    ((adapter, plat),) = selected_variants(encoder["model"], encoder["probes"].kind, [pattern])
    return str(plat), execute(adapter, encoder["model"], plat, encoder["probes"])


def test_match_compares_and_names_the_outputs_the_suspect_holds(encoder, tmp_path):
    db, probes, model = encoder["db"], encoder["probes"], encoder["model"]
    label, res = _fresh(encoder, PLATFORMS[1])
    ids = res.ids[:4]
    both = load_suspect(
        write_npz(tmp_path / "both.npz", probes.sha256, model.sha256, ids, {k: v[:4] for k, v in res.outputs.items()})
    )
    rep = match(both, db)
    assert rep.verdict.status == IDENTIFIED and rep.verdict.platforms == [label]
    assert rep.evidence.suspect.outputs == ["hidden", "pooled"]
    only = load_suspect(
        write_kserve(tmp_path / "pooled.jsonl", probes.sha256, "enc", ids, {"pooled": res.outputs["pooled"][:4]})
    )
    rep = match(only, db)
    assert rep.verdict.platforms == [label] and rep.evidence.suspect.outputs == ["pooled"]
    unnamed = load_suspect(write_npz(tmp_path / "u.npz", probes.sha256, None, ids, res.outputs["pooled"][:4]))
    rep = match(unnamed, db)  # an unnamed array: the output its shape fits
    assert rep.verdict.platforms == [label] and rep.evidence.suspect.outputs == ["pooled"]
    wrong = load_suspect(
        write_plain(
            tmp_path / "w.json",
            probes.name,
            None,
            "raw",
            ids,
            _view(res.outputs["pooled"][:4]),
            "float32",
            output="logits",
        )
    )
    with pytest.raises(BadSuspectError, match="'logits' is not an output of"):
        match(wrong, db)
    tampered = {k: v[:4].copy() for k, v in res.outputs.items()}
    tampered["hidden"].view(np.uint32)[0, 0, 0] ^= 1  # one bit of one output of one query
    rep = match(load_suspect(write_npz(tmp_path / "t.npz", probes.sha256, model.sha256, ids, tampered)), db)
    assert rep.evidence.exact.matched_queries == 3 and rep.verdict.status != IDENTIFIED


def _view(values):
    from hspi_onnx.forms import View

    return View(values, None)


def test_probe_files_for_several_inputs_drive_the_cli(encoder, tmp_path, capsys):
    from hspi_onnx.cli import main

    path = encoder["probes"].save(tmp_path / "p.npz")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                str(encoder["root"] / "enc.onnx"),
                "-p",
                PLATFORMS[0],
                "--probes",
                str(path),
                "-o",
                str(tmp_path / "run.npz"),
                "-q",
            ]
        )
    assert exc.value.code in (0, None)
    rep = match(load_suspect(tmp_path / "run.npz"), encoder["db"])
    assert rep.verdict.status == IDENTIFIED and rep.evidence.suspect.outputs == ["hidden", "pooled"]
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "db",
                "build",
                str(encoder["root"] / "enc.onnx"),
                "--db",
                str(tmp_path / "d"),
                "-n",
                "2",
                "--dim",
                "sequence=0",
                "-q",
            ]
        )
    assert exc.value.code == 2
