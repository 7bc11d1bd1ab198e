"""The saved svm-bits baseline (learn/baseline.SvmBitsBundle): the files the dict-based code
wrote, read back by format version, hostile directories refused with one HspiError line."""

import json

import numpy as np
import pytest

from hspi_onnx.errors import HspiError
from hspi_onnx.learn.baseline import SVM_BITS_FORMAT, SvmBitsBundle, fit_svm_bits


@pytest.fixture(scope="module")
def bundle() -> SvmBitsBundle:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(60, 64), dtype=np.uint8)
    y = np.array(["fp32", "fp16", "int8"] * 20, dtype=object)
    X[y == "fp16", :8] = 1  # something to learn
    models = {"precision": fit_svm_bits(X, y, n_queries=2), "runtime/version": fit_svm_bits(X, y[::-1], 2)}
    return SvmBitsBundle(models, "raw", 2, 60, db="/dbs/ref", db_digest="ab" * 16)


def test_saved_files_are_those_written_before_and_load_back(bundle, tmp_path):
    out = bundle.save(tmp_path / "svm")
    assert sorted(p.name for p in out.iterdir()) == [
        "classifier.json",
        "svm-bits-precision.npz",
        "svm-bits-runtime_version.npz",
    ]
    # what save_svm_bits wrote: the training meta, the format, each target's file and classes
    entries = {
        "precision": {"file": "svm-bits-precision.npz", "classes": ["fp16", "fp32", "int8"]},
        "runtime/version": {"file": "svm-bits-runtime_version.npz", "classes": ["fp16", "fp32", "int8"]},
    }
    meta = {"method": "svm-bits", "form": "raw", "n_queries": 2, "examples": 60, "db": "/dbs/ref"}
    meta |= {"db_digest": "ab" * 16, "format": "hspi-svm-bits/1", "targets": entries}
    assert (out / "classifier.json").read_text("utf-8") == json.dumps(meta, indent=1, sort_keys=True)
    with np.load(out / "svm-bits-precision.npz", allow_pickle=False) as z:
        assert z.files == ["mean", "scale", "pairs", "coef", "intercept"] and z["coef"].shape == (3, 64)

    back = SvmBitsBundle.load(out)
    assert (back.form, back.n_queries, back.examples, back.db, back.db_digest) == ("raw", 2, 60, "/dbs/ref", "ab" * 16)
    X = np.random.default_rng(1).integers(0, 2, size=(10, 64), dtype=np.uint8)
    for name, model in bundle.targets.items():
        again = back.targets[name]
        assert again.classes == model.classes and np.array_equal(again.predict(X), model.predict(X))
        assert np.array_equal(again.coef, model.coef) and again.coef.dtype == model.coef.dtype
    assert back.as_dict() == bundle.as_dict()


def test_without_the_db_the_keys_stay_absent(bundle, tmp_path):
    bare = SvmBitsBundle(bundle.targets, "top5", 2, 60)
    doc = json.loads((bare.save(tmp_path / "bare") / "classifier.json").read_text())
    assert "db" not in doc and "db_digest" not in doc and doc["format"] == SVM_BITS_FORMAT
    assert SvmBitsBundle.load(tmp_path / "bare").db is None


def _edit(path, change):
    doc = json.loads((path / "classifier.json").read_text())
    change(doc)
    (path / "classifier.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(format="hspi-svm-bits/2"), "is format hspi-svm-bits/2; this version reads hspi-svm-bits/1"),
        (lambda d: d.update(format="hspi-classifier/2"), "is not an svm-bits classifier (classifier.json format 'hspi"),
        (lambda d: d.pop("format"), "is not an svm-bits classifier (classifier.json format None"),
        (lambda d: d.update(method="catboost"), "'method' is not 'svm-bits'"),
        (lambda d: d.update(n_queries="2"), "'n_queries' is not an integer of at least 1"),
        (lambda d: d.update(n_queries=0), "'n_queries' is not an integer of at least 1"),
        (lambda d: d.update(examples=True), "'examples' is not an integer of at least 0"),
        (lambda d: d.update(form=None), "'form' is not a string"),
        (lambda d: d.update(db=3), "'db' is not a string"),
        (lambda d: d.update(targets=[]), "'targets' is not an object naming at least one target"),
        (lambda d: d["targets"]["precision"].update(file="../svm-bits-precision.npz"), "names no .npz file"),
        (lambda d: d["targets"]["precision"].update(file="classifier.json"), "names no .npz file"),
        (lambda d: d["targets"].update(precision="svm-bits-precision.npz"), "names no .npz file"),
        (lambda d: d["targets"]["precision"].update(classes=["fp32"]), "no list of two or more class names"),
        (lambda d: d["targets"]["precision"].update(classes=["a", "b", "c", "d"]), "array 'pairs' is int64 (3, 2)"),
        (lambda d: d["targets"]["precision"].update(file="svm-bits-none.npz"), "does not exist"),
    ],
)
def test_a_hostile_bundle_is_refused_on_one_line(bundle, tmp_path, change, message):
    out = bundle.save(tmp_path / "svm")
    _edit(out, change)
    with pytest.raises(HspiError) as exc:
        SvmBitsBundle.load(out)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"coef": np.zeros((3, 5), np.float32)}, "array 'coef' is float32 (3, 5), not a float array (3, 64)"),
        ({"pairs": np.zeros((3, 2), np.float32)}, "array 'pairs' is float32 (3, 2), not an integer array (3, 2)"),
        ({"pairs": np.full((3, 2), 7)}, "no one-vs-one machines over its 3 classes"),
        ({"mean": np.zeros((2, 2), np.float32)}, "array 'mean' is float32 (2, 2), not a float vector"),
        ({"extra": np.zeros(1)}, "must hold exactly coef, intercept, mean, pairs, scale"),
        ({"coef": np.array([object()] * 3)}, "pickled objects are never loaded"),
    ],
)
def test_arrays_that_disagree_with_the_classes_are_refused(bundle, tmp_path, arrays, message):
    out = bundle.save(tmp_path / "svm")
    model = bundle.targets["precision"]
    have = {k: getattr(model, k) for k in ("mean", "scale", "pairs", "coef", "intercept")} | arrays
    np.savez(out / "svm-bits-precision.npz", allow_pickle=True, **have)
    with pytest.raises(HspiError) as exc:
        SvmBitsBundle.load(out)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_what_is_no_bundle_says_so(tmp_path):
    with pytest.raises(HspiError, match="is not a classifier directory"):
        SvmBitsBundle.load(tmp_path)
    (tmp_path / "classifier.json").write_text("{")
    with pytest.raises(HspiError, match=r"classifier.json is unreadable \(JSONDecodeError\)"):
        SvmBitsBundle.load(tmp_path)
    (tmp_path / "classifier.json").write_text("[]")
    with pytest.raises(HspiError, match="is not an svm-bits classifier"):
        SvmBitsBundle.load(tmp_path)
