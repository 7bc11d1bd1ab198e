"""Classifier and evaluation on a tiny real DB (digits CNN, five CPU platforms)."""

import json

import numpy as np
import pytest

from conftest import hspi
from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.inputs.probes import generate
from hspi_onnx.learn.classify import load_classifier
from hspi_onnx.learn.evaluate import ceiling, held_out_mask
from hspi_onnx.learn.examples import Examples, build_examples, draw_groups

PLATFORMS = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
    "pytorch/*/fp32/bs=1,layout=nchw,src=module,threads=1",
    "pytorch/*/bf16/bs=1,layout=nchw,src=module,threads=1",
]


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory, zoo):
    db = ReferenceDB(tmp_path_factory.mktemp("clf") / "db", create=True)
    summary = build(db, zoo["digits"], generate(zoo["digits"], n=96), PLATFORMS)
    assert len(summary.built) == len(PLATFORMS) and not summary.failed
    return db


@pytest.fixture(scope="module")
def examples(tiny_db):
    return build_examples(load_groups(tiny_db), "raw", tiny_db.manifest())


def test_features_use_the_float64_reference(examples):
    assert examples.X.shape == (5 * 96, len(examples.feature_names))
    err = examples.feature_names.index("err_ulp_mean")
    assert not np.isnan(examples.X[:, err]).any()  # the reference was recomputed white-box


def test_no_probe_lands_in_both_train_and_test(examples):
    test = held_out_mask(examples, 0.3, seed=3)
    train_probes = set(zip(examples.model[~test], examples.probe[~test]))
    test_probes = set(zip(examples.model[test], examples.probe[test]))
    assert test_probes and train_probes and not train_probes & test_probes
    assert len(test_probes) == round(0.3 * 96)
    for n in (1, 4, 32):
        for g in draw_groups(examples, test, n, 40, seed=0):
            assert len(g) == n == len(set(g.tolist()))
            assert test[g].all() and len(set(examples.unit[g].tolist())) == 1


def test_ceiling_counts_bit_identical_platforms_once():
    ex = Examples(
        "raw",
        np.zeros((4, 1)),
        np.zeros((4, 1), np.uint8),
        np.array(["a", "b", "c", "d"], dtype=object),
        np.array(["k1", "k1", "k2", "k3"], dtype=object),
        np.array(["m"] * 4, dtype=object),
        np.zeros(4, int),
        np.arange(4),
    )
    y = np.array(["x", "y", "x", "y"], dtype=object)  # a and b are identical but differ in y
    assert ceiling(ex, np.ones(4, bool), y) == 0.75


def test_train_saves_native_models_and_predicts(tiny_db, examples, tmp_path):
    out = tmp_path / "clf"
    proc = hspi("train", "--db", tiny_db.root, "-o", out, "--iterations", "60", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["platforms"] == 5 and report["targets"]["precision"] == 4
    assert (out / "classifier.json").is_file() and (out / "precision.cbm").is_file()
    assert not list(out.glob("*.pkl")) and not list(out.glob("*.pickle"))
    clf = load_classifier(out)
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["features"] == list(examples.feature_names) and meta["db_digest"]
    tm = clf.targets["precision"]
    for precision in ("fp16", "bf16", "int8"):
        rows = np.flatnonzero([f"/{precision}/" in lab for lab in examples.label])[:8]
        assert tm.classes[int(np.argmax(tm.log_proba(examples.X[rows]).sum(axis=0)))] == precision
    (out / "classifier.json").write_text("{not json")
    with pytest.raises(HspiError):
        load_classifier(out)
    bad = hspi("train", "--db", tiny_db.root, "-o", out, "--form", "rounded")
    assert (
        bad.returncode == 2 and "Invalid value for '--form'" in bad.stderr and "'rounded' is not one of" in bad.stderr
    )


def test_svm_bits_baseline_trains_without_pickle(tiny_db, tmp_path):
    out = tmp_path / "svm"
    proc = hspi(
        "train",
        "--db",
        tiny_db.root,
        "-o",
        out,
        "--method",
        "svm-bits",
        "--queries",
        "2",
        "-t",
        "precision",
        "--json",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(out / "svm-bits-precision.npz", allow_pickle=False) as z:
        assert z["coef"].shape == (6, 2 * 320)  # 4 precisions -> 6 one-vs-one machines


def test_eval_end_to_end_beats_chance(tiny_db, tmp_path):
    plots = tmp_path / "plots"
    proc = hspi(
        "eval",
        "--db",
        tiny_db.root,
        "--json",
        "-q",
        "--protocol",
        "split",
        "--protocol",
        "loro",
        "--protocol",
        "degraded",
        "--form",
        "round3",
        "--form",
        "argmax",
        "--queries",
        "1",
        "--queries",
        "4",
        "-t",
        "precision",
        "-t",
        "runtime",
        "--iterations",
        "60",
        "--plots",
        plots,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    recs = report["records"]
    assert report["test_probes"] == {"digits": 29} and report["train_probes"] == {"digits": 67}

    def acc(method, protocol="split", form="raw", target="precision", n=4, holdout="-"):
        (r,) = [
            r
            for r in recs
            if (r["method"], r["protocol"], r["form"], r["target"], r["n"], r["holdout"])
            == (method, protocol, form, target, n, holdout)
        ]
        return r

    ours = acc("catboost")
    assert ours["accuracy"] >= 0.9 and ours["groups"] >= 5 * 7  # chance is 0.4 (2 of 5 platforms are fp32)
    rt = acc("catboost", target="runtime")
    assert rt["majority"] == 0.6 and rt["accuracy"] >= rt["majority"] + 0.15
    base = acc("svm-bits")
    assert base["groups"] == ours["groups"] and base["accuracy"] is not None
    # leave-one-runtime-out: PyTorch's bf16 never occurs in ONNX Runtime training data
    held = acc("catboost", protocol="loro", holdout="pytorch")
    assert held["unseen_values"] == ["bf16"] and held["unpredictable_groups"] > 0
    assert acc("catboost", protocol="degraded", form="round3")["accuracy"] is not None
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert "accuracy-split.png" in pngs and "confusion-precision.png" in pngs


def test_protocol_cases_hold_out_probes_runtimes_and_models():
    from hspi_onnx.learn.evaluate import EvalConfig, cases

    labels = ["onnxruntime@1/cpu/fp32/bs=1", "pytorch@2/cpu/fp32/bs=1"]
    rows = [(m, lab, p) for m in ("a", "b") for lab in labels for p in range(10)]
    m, lab, p = (np.array(col, dtype=object) for col in zip(*rows))
    unit = np.array([hash((a, b)) % 1000 for a, b, _ in rows])
    ex = Examples("raw", np.zeros((len(rows), 1)), np.zeros((len(rows), 1), np.uint8), lab, lab, m, p.astype(int), unit)
    got = {(c.protocol, c.holdout, c.form): c for c in cases(ex, EvalConfig(forms=("top1",)))}
    assert set(got) == {
        ("split", "-", "raw"),
        ("loro", "onnxruntime", "raw"),
        ("loro", "pytorch", "raw"),
        ("lomo", "a", "raw"),
        ("lomo", "b", "raw"),
        ("degraded", "-", "top1"),
    }
    for c in got.values():
        assert not (c.train & c.test).any()
        train_probes = set(zip(m[c.train], p[c.train]))
        assert not train_probes & set(zip(m[c.test], p[c.test]))
    loro = got[("loro", "pytorch", "raw")]
    assert all(x.startswith("pytorch") for x in lab[loro.test]) and not any(
        x.startswith("pytorch") for x in lab[loro.train]
    )
    lomo = got[("lomo", "a", "raw")]
    assert set(m[lomo.test]) == {"a"} and set(m[lomo.train]) == {"b"}


def test_fit_and_save_is_what_train_runs(tiny_db, tmp_path):
    """hspi_onnx.learn.training.fit_and_save: both methods, the stages it announces, what it saves."""
    from hspi_onnx.learn.classify import load_classifier
    from hspi_onnx.learn.training import fit_and_save

    stages, steps = [], []
    report = fit_and_save(
        tiny_db,
        tmp_path / "clf",
        iterations=5,
        rows_per_platform=20,
        on_stage=lambda name, total: stages.append((name, total)),
        on_step=lambda: steps.append(1),
    )
    assert [s[0] for s in stages] == ["features (raw)", "training"] and len(steps) == sum(t for _, t in stages)
    clf = load_classifier(tmp_path / "clf")
    assert set(clf.targets) == set(report["targets"]) and clf.meta["method"] == report["method"] == "catboost"
    svm = fit_and_save(tiny_db, tmp_path / "svm", method="svm-bits", queries=2)
    assert svm["method"] == "svm-bits" and set(svm["targets"]) and (tmp_path / "svm").is_dir()


def test_unpredictable_names_held_out_values_training_never_saw():
    from types import SimpleNamespace

    from hspi_onnx.learn.results import unpredictable

    def rec(**kw):
        return SimpleNamespace(
            **(
                {
                    "protocol": "loro",
                    "holdout": "pytorch",
                    "target": "runtime",
                    "unseen_values": [],
                    "method": "catboost",
                    "n": 1,
                }
                | kw
            )
        )

    report = SimpleNamespace(
        queries=[1, 8],
        records=[
            rec(unseen_values=["pytorch"]),
            rec(n=8, unseen_values=["x"]),
            rec(method="svm-bits", unseen_values=["y"]),
            rec(),
        ],
    )
    assert unpredictable(report) == ["loro-pytorch runtime: pytorch"]
