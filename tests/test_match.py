"""hspi match / verify on a small real DB (digits CNN, CPU platforms of both runtimes)."""

import json

import numpy as np
import pytest

from conftest import hspi
from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.index import load_index
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import degrade
from hspi_onnx.inputs.probes import generate
from hspi_onnx.labels import Platform
from hspi_onnx.learn.classify import CatBoostParams, train
from hspi_onnx.learn.examples import build_examples
from hspi_onnx.match.claims import parse_claim, verify
from hspi_onnx.match.identify import CONSISTENT, IDENTIFIED, UNKNOWN, match
from hspi_onnx.match.suspect import load_suspect, write_kserve, write_npz, write_plain
from hspi_onnx.run.adapter import registry
from hspi_onnx.run.runner import execute

IN_DB = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp32/bs=1,opt=disabled,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
    "pytorch/*/fp32/bs=1,layout=nchw,src=module,threads=1",
    "pytorch/*/bf16/bs=1,layout=nchw,src=module,threads=1",
    "pytorch/*/fp16/bs=1,layout=nchw,src=module,threads=1",
]
HELD_OUT = "pytorch/*/bf16/bs=8,layout=nhwc,src=onnx,threads=1"  # not built into the DB
N = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory, zoo):
    root = tmp_path_factory.mktemp("match")
    db = ReferenceDB(root / "db", create=True)
    model = zoo["digits"]
    probes = generate(model, n=N)
    summary = build(db, model, probes, IN_DB)
    assert len(summary.built) == len(IN_DB) and not summary.failed
    ex = build_examples(load_groups(db), "raw", db.manifest())
    clf = train(ex, None, CatBoostParams(iterations=60, max_rows_per_unit=N))
    clf.meta["db_digest"] = "test"
    clf.save(root / "clf")
    return {"root": root, "db": db, "model": model, "probes": probes, "clf": clf, "labels": sorted(summary.built)}


def rerun(setup, pattern):
    from hspi_onnx.run.adapter import selected_variants

    ((adapter, plat),) = selected_variants(setup["model"], setup["probes"].kind, [pattern])
    return str(plat), execute(adapter, setup["model"], plat, setup["probes"])


def suspect_of(setup, path, outputs, ids):
    return load_suspect(write_npz(path, setup["probes"].sha256, setup["model"].sha256, ids, outputs))


def test_every_platform_is_identified_from_one_query(setup, tmp_path):
    db, index = setup["db"], load_index(setup["db"])
    group = load_groups(db)[0]
    classes = group.classes()
    for pattern in IN_DB:
        label, result = rerun(setup, pattern)  # a fresh run, not the DB's bytes
        q = int(np.random.default_rng(len(label)).integers(N))
        rep = match(
            suspect_of(setup, tmp_path / "s.npz", result.first[q : q + 1], result.ids[q : q + 1]), db, index=index
        )
        v = rep.verdict
        assert v.status == IDENTIFIED and label in v.platforms, (label, v)
        # everything named is bit-identical on that probe, and the whole class is named
        for other in v.platforms:
            assert group.outputs[other][q].tobytes() == result.first[q].tobytes()
        members = classes[label].split(" | ")
        assert set(members) <= set(v.platforms)


def test_held_out_platform_is_unknown_with_correct_confident_attributes(setup, tmp_path):
    label, result = rerun(setup, HELD_OUT)
    assert label not in setup["labels"]
    rep = match(suspect_of(setup, tmp_path / "h.npz", result.first[:16], result.ids[:16]), setup["db"], setup["clf"])
    v = rep.verdict
    if v.status == IDENTIFIED:  # bit-identical to DB platforms on this CPU: then they must really be
        group = load_groups(setup["db"])[0]
        for other in v.platforms:
            assert group.outputs[other][:16].tobytes() == result.first[:16].tobytes()
    else:
        assert v.status == UNKNOWN and not v.platforms
        assert rep.evidence.nearest and rep.evidence.exact.matched_queries < 16
    truth = Platform.parse(label)
    targets = rep.evidence.stats.targets
    for name, want in (("precision", truth.precision), ("runtime", truth.runtime)):
        if targets[name].confident:
            assert targets[name].best[0] == want, (name, targets[name])
    assert targets["precision"].best[0] == "bf16"


def test_kserve_and_plain_json_round_trip(setup, tmp_path):
    label, result = rerun(setup, IN_DB[2])
    ids, outs = result.ids[:10], result.first[:10]
    path = write_kserve(tmp_path / "r.jsonl", setup["probes"].sha256, "digits", ids, outs, batch=4)
    s = load_suspect(path)
    assert s.source == "kserve" and s.values.dtype == outs.dtype and np.array_equal(s.ids, ids)
    rep = match(s, setup["db"])
    assert rep.verdict.status == IDENTIFIED and label in rep.verdict.platforms
    # a deployment's own model_name does not matter; without parameters.model the shape decides
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    for d in docs:
        d["model_name"] = "prod-classifier-v3"
        del d["parameters"]["model"]
    path.write_text("\n".join(json.dumps(d) for d in docs))
    assert match(load_suspect(path), setup["db"]).verdict.status == IDENTIFIED
    for form in ("top5", "argmax", "round4"):
        view = degrade(outs, form)
        s = load_suspect(write_plain(tmp_path / f"{form}.json", setup["probes"].name, "digits", form, ids, view))
        rep = match(s, setup["db"])
        assert s.form == form and rep.evidence.exact.matched_queries == len(ids)
        if rep.verdict.status == CONSISTENT:
            assert label in rep.verdict.platforms


def test_verify_verdicts_and_exit_codes(setup, tmp_path):
    label, result = rerun(setup, IN_DB[3])
    path = write_npz(tmp_path / "v.npz", setup["probes"].sha256, None, result.ids[:8], result.first[:8])
    db = setup["db"].root
    ok = hspi("verify", path, "--db", db, "--claim", "runtime=onnxruntime,precision=int8", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "CONSISTENT"
    bad = hspi("verify", path, "--db", db, "--claim", "precision=fp32,runtime=onnxruntime")
    assert bad.returncode == 1 and "INCONSISTENT" in bad.stdout
    unknown = hspi("verify", path, "--db", db, "--claim", "precision=fp8")
    assert unknown.returncode == 3 and "INCONCLUSIVE" in unknown.stdout
    typo = hspi("verify", path, "--db", db, "--claim", "precison=fp16")
    assert (
        typo.returncode == 2 and typo.stderr.startswith("error: unknown claim key") and "Traceback" not in typo.stderr
    )
    m = hspi("match", path, "--db", db, "--classifier", setup["root"] / "clf", "--json")
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["verdict"]["status"] == IDENTIFIED


def test_statistical_verify_on_an_unknown_platform(setup, tmp_path):
    label, result = rerun(setup, HELD_OUT)
    s = suspect_of(setup, tmp_path / "u.npz", result.first[:16], result.ids[:16])
    rep = match(s, setup["db"], setup["clf"])
    platforms = load_index(setup["db"]).platforms
    right = verify(rep, parse_claim("precision=bf16"), platforms)
    wrong = verify(rep, parse_claim("precision=int8"), platforms)
    assert right.verdict in ("CONSISTENT", "INCONCLUSIVE")
    assert wrong.verdict in ("INCONSISTENT", "INCONCLUSIVE")
    assert (right.verdict, wrong.verdict) != ("INCONCLUSIVE", "INCONCLUSIVE")


def test_run_output_is_a_suspect(setup, tmp_path):
    label, _ = rerun(setup, IN_DB[0])
    out = tmp_path / "run.npz"
    r = hspi("run", "digits", "-p", label, "-n", N, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    rep = match(load_suspect(out), setup["db"])
    assert rep.verdict.status == IDENTIFIED and label in rep.verdict.platforms


def test_index_is_rebuilt_when_the_db_changes(setup, tmp_path):
    db = setup["db"]
    before = load_index(db)
    extra = build(db, setup["model"], setup["probes"], ["onnxruntime/*/fp32/bs=8,opt=all,threads=2"])
    after = load_index(db)
    assert len(after.digest) > len(before.digest) and extra.built[0] in after.platforms
    assert np.all(after.digest[1:] >= after.digest[:-1])  # sorted: lookups are binary searches
    assert registry()  # adapters still listed


def test_classifier_must_match_the_suspects_form(setup, tmp_path):
    from hspi_onnx.errors import HspiError

    label, result = rerun(setup, IN_DB[1])
    view = degrade(result.first[:6], "top5")
    s = load_suspect(write_plain(tmp_path / "t.json", setup["probes"].sha256, None, "top5", result.ids[:6], view))
    with pytest.raises(HspiError, match="trained for raw outputs, the suspect has top5"):
        match(s, setup["db"], setup["clf"])


def test_db_index_command(setup):
    r = hspi("db", "index", "--db", setup["db"].root, "--json", "-q")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["outputs"] >= len(IN_DB) * N and report["groups"] == 1


def test_match_suspect_builds_a_missing_index_and_names_its_classifier(setup, tmp_path):
    """hspi_onnx.match.session.match_suspect: what `hspi match` runs."""
    import shutil

    from hspi_onnx.match.session import match_suspect

    db = ReferenceDB(shutil.copytree(setup["db"].root, tmp_path / "db"))
    shutil.rmtree(db.root / "index", ignore_errors=True)
    label, result = rerun(setup, IN_DB[0])
    suspect = suspect_of(setup, tmp_path / "s.npz", result.first[:2], result.ids[:2])
    calls = []
    rep = match_suspect(
        suspect, db, setup["root"] / "clf", on_index=lambda n: calls.append(n), on_shard=lambda: calls.append("shard")
    )
    assert calls[0] == len(db.shards()) and calls.count("shard") == len(db.shards())
    assert rep.verdict.status == IDENTIFIED and label in rep.verdict.platforms
    assert rep.evidence.stats.path == str(setup["root"] / "clf")
    calls.clear()
    again = match_suspect(suspect, db)  # the index is there now: nothing rebuilt, no classifier
    assert not calls and again.verdict.platforms == rep.verdict.platforms and again.evidence.stats is None
