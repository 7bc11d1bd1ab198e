import json

import numpy as np
import pytest

from hspi_onnx.errors import BadProbesError
from hspi_onnx.inputs.probes import KINDS, generate, load_probes


@pytest.mark.parametrize("name", ["resnet", "digits", "lm"])
def test_every_kind_generates_seeded_hashed_probes(zoo, name, tmp_path):
    model = zoo[name]
    spec = model.primary
    for kind in KINDS[spec.kind]:
        a, b = generate(model, kind, n=6, seed=1), generate(model, kind, n=6, seed=1)
        assert a.sha256 == b.sha256 and list(a.inputs) == [spec.name] and a.primary.shape == (6, *spec.shape)
        assert generate(model, kind, n=6, seed=2).sha256 != a.sha256
        a.check_fits(model)
        back = load_probes(a.save(tmp_path / f"{kind}.npz"))
        assert back.sha256 == a.sha256 and np.array_equal(back.primary, a.primary) and list(back.inputs) == [spec.name]
        if spec.kind != "tokens":
            assert spec.low <= a.primary.min() and a.primary.max() <= spec.high


def test_single_input_probe_sets_keep_the_hash_of_earlier_versions(zoo):
    """tests/data/db-v1 was built before several inputs existed, from generate(digits, n=8)."""
    from pathlib import Path

    manifest = json.loads((Path(__file__).parent / "data" / "db-v1" / "manifest.json").read_text())
    (old,) = {run["probes_sha256"] for run in manifest["runs"].values()}
    assert generate(zoo["digits"], n=8).sha256 == old


def test_real_images_are_not_noise(zoo):
    img, noise = generate(zoo["resnet"], "images", n=8).primary, generate(zoo["resnet"], "noise", n=8).primary
    neighbour = lambda x: np.abs(np.diff(x, axis=-1)).mean()  # noqa: E731
    assert neighbour(img) < 0.5 * neighbour(noise)  # photos are smooth, noise is not


def test_calibration_split_is_disjoint_from_probes(zoo):
    probes = generate(zoo["digits"], "images", n=200).primary.reshape(200, -1)
    calib = generate(zoo["digits"], "images", n=200, split="calib").primary.reshape(200, -1)
    shared = {r.tobytes() for r in probes} & {r.tobytes() for r in calib}
    assert not shared


def test_kind_must_fit_the_input(zoo):
    with pytest.raises(BadProbesError, match="use one of tokens, text"):
        generate(zoo["lm"], "images", n=2)
    with pytest.raises(BadProbesError, match="shape"):
        generate(zoo["resnet"], n=2).bind(zoo["digits"])


def _encoder(path, vocab=50):
    """A BERT-shaped graph: input_ids, attention_mask, token_type_ids over a dynamic sequence."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    emb = helper.make_tensor("emb", TensorProto.FLOAT, [vocab, 4], rng.normal(size=(vocab, 4)).ravel().tolist())
    typ = helper.make_tensor("typ", TensorProto.FLOAT, [2, 4], rng.normal(size=(2, 4)).ravel().tolist())
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Gather", ["typ", "token_type_ids"], ["t"]),
        helper.make_node("Add", ["e", "t"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["h", "m3"], ["hidden"]),
        helper.make_node("ReduceSum", ["hidden", "one"], ["pooled"], keepdims=0),
    ]
    ints = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])  # noqa: E731
    graph = helper.make_graph(
        nodes,
        "enc",
        [ints("input_ids"), ints("attention_mask"), ints("token_type_ids")],
        [
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", 4]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            emb,
            typ,
            helper.make_tensor("axis", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_several_inputs_get_consistent_probes_of_their_own_kind(tmp_path):
    from hspi_onnx.inputs.model import resolve_model

    model = resolve_model(_encoder(tmp_path / "enc.onnx"))
    assert [(s.name, s.kind) for s in model.inputs] == [
        ("input_ids", "tokens"),
        ("attention_mask", "mask"),
        ("token_type_ids", "segments"),
    ]
    assert model.inputs[0].vocab == 50 and model.output_names == ["hidden", "pooled"]
    probes = generate(model, n=32, seed=3, dims={"sequence": 12})
    ids, mask, types = (probes.inputs[k] for k in model.input_names)
    assert ids.shape == mask.shape == types.shape == (32, 12) and probes.dims == {"sequence": 12}
    assert ids.dtype == mask.dtype == types.dtype == np.int64
    lengths = mask.sum(axis=1)
    assert set(np.unique(mask)) <= {0, 1} and lengths.min() >= 6 and len(set(lengths.tolist())) > 1
    assert (np.diff(mask, axis=1) <= 0).all()  # ones, then padding
    assert (ids[mask == 0] == 0).all() and ids.max() < 50 and set(np.unique(types)) == {0, 1}
    assert (types[mask == 0] == 0).all() and (np.diff(types, axis=1)[mask[:, 1:] == 1] >= 0).all()
    back = load_probes(probes.save(tmp_path / "p.npz"))
    assert back.sha256 == probes.sha256 and list(back.inputs) == model.input_names and back.dims == probes.dims
    with np.load(tmp_path / "p.npz") as npz:
        assert sorted(npz.files) == ["ids", "input_0", "input_1", "input_2", "meta"]
    assert generate(model, n=32, seed=3, dims={"sequence": 12}).sha256 == probes.sha256
    assert generate(model, n=32, seed=3, dims={"sequence": 10}).sha256 != probes.sha256
    other = generate(model, n=4, dims={"sequence": 12})
    other.inputs["attention_mask"] = other.inputs["attention_mask"][:, :8]
    with pytest.raises(BadProbesError, match="two sizes"):
        other.check_fits(model)
    with pytest.raises(BadProbesError, match="needs a size"):
        generate(model, n=2, dims={"sequence": 0})


def test_tampered_or_pickled_probe_files_are_refused(zoo, tmp_path):
    path = generate(zoo["digits"], n=4).save(tmp_path / "p.npz")
    with np.load(path) as npz:
        parts = {k: npz[k] for k in npz.files}
    parts["inputs"] = parts["inputs"] + 1e-3
    np.savez(tmp_path / "t.npz", **parts)
    with pytest.raises(BadProbesError, match="content hash"):
        load_probes(tmp_path / "t.npz")
    np.savez(tmp_path / "o.npz", inputs=np.array([object()], dtype=object), ids=parts["ids"], meta=parts["meta"])
    with pytest.raises(BadProbesError):
        load_probes(tmp_path / "o.npz")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BadProbesError):
        load_probes(tmp_path / "g.npz")
    del parts["inputs"]
    np.savez(tmp_path / "n.npz", input_0=np.zeros((4, 2), np.float32), input_7=np.zeros((4, 2), np.float32), **parts)
    with pytest.raises(BadProbesError):
        load_probes(tmp_path / "n.npz")
