"""Outputs that are one value for the whole batch (NonMaxSuppression's selected boxes): every
family computes them, the DB stores the model's per-probe outputs and says which it left out
and why (issue 30's detection head)."""

import importlib.util
import json

import numpy as np
import pytest

from conftest import hspi
from hspi_onnx.errors import BadModelError
from hspi_onnx.inputs.model import open_model


def _detector(path, batch, nms_rows="n", only_nms=False):
    """Boxes and scores from a 1x1 convolution over a 4x4 image (16 anchors), then
    NonMaxSuppression (at most 8 boxes, IoU 0.5)."""
    from onnx import TensorProto, helper, numpy_helper, save

    w = np.random.default_rng(0).standard_normal((5, 3, 1, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([0, 5, -1], np.int64), "to_anchors"),
        numpy_helper.from_array(np.array([4, 1], np.int64), "sizes"),
        numpy_helper.from_array(np.array([8], np.int64), "max_boxes"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["s"]),
        helper.make_node("Reshape", ["s", "to_anchors"], ["c"]),  # (B, 5, 16)
        helper.make_node("Split", ["c", "sizes"], ["coords", "scores"], axis=1),
        helper.make_node("Transpose", ["coords"], ["boxes"], perm=[0, 2, 1]),  # (B, 16, 4)
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_boxes", "iou"], ["selected"]),
    ]
    outs = [helper.make_tensor_value_info("selected", TensorProto.INT64, [nms_rows, 3])]
    if not only_nms:
        outs = [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 16, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 1, 16]),
            *outs,
        ]
    graph = helper.make_graph(
        nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])], outs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, path)
    return path


@pytest.mark.parametrize("batch", [1, "batch"])
def test_a_nms_list_is_computed_not_stored(tmp_path, batch):
    info = open_model(_detector(tmp_path / "det.onnx", batch))
    assert info.output_names == ["boxes", "scores"]
    assert info.graph_output_names == ["boxes", "scores", "selected"]
    assert info.whole_batch == ["selected"]
    why = info.graph_outputs[2].whole_batch
    assert why.startswith("NonMaxSuppression's list") and "'n'" in why and repr(batch) in why
    assert info.describe()["not_stored"][0]["name"] == "selected"


def test_an_output_on_the_batch_axis_or_unknown_is_stored(tmp_path):
    # the batch symbol itself, a static first axis under a dynamic batch (checked when it runs)
    for rows in ("batch", 8):
        info = open_model(_detector(tmp_path / f"det-{rows}.onnx", "batch", nms_rows=rows))
        assert info.whole_batch == []


def test_a_model_with_only_whole_batch_outputs_is_refused(tmp_path):
    with pytest.raises(BadModelError, match="no output of the model has the probes on its first axis"):
        open_model(_detector(tmp_path / "nms.onnx", 1, only_nms=True))


def test_every_family_builds_the_detector(tmp_path):
    """ONNX Runtime, the reference evaluator and the converter run NonMaxSuppression; boxes and
    scores land in the DB, 'selected' is named as not stored."""
    model = _detector(tmp_path / "det.onnx", "batch")
    db = tmp_path / "db"
    patterns = ["onnxruntime/*/fp32/*opt=all,threads=1", "onnxref/*/fp32/*", "pytorch/*/fp32/*nchw*threads=1"]
    patterns += ["openvino/*/fp32/*threads=1"] if importlib.util.find_spec("openvino") else []
    args = ["db", "build", str(model), "--db", str(db), "-n", "3", "--json"]
    for p in patterns:
        args += ["-p", p]
    res = hspi(*args)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["failed"] == {}
    assert {p.split("@")[0] for p in doc["built"]} == {p.split("/")[0] for p in patterns}
    assert doc["not_stored"]["selected"].startswith("NonMaxSuppression")
    manifest = json.loads((db / "manifest.json").read_text())
    (entry,) = manifest["models"].values()
    assert [o["name"] for o in entry["outputs"]] == ["boxes", "scores"]
    assert entry["not_stored"][0]["name"] == "selected"


def test_an_output_an_exporter_named_otherwise_is_still_stored(tmp_path):
    """A first axis named 'n' where the batch is 'batch', with no batch-collapsing op before
    it (an exporter's naming, not NonMaxSuppression's list), stays a stored output."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "relu.onnx")
    info = open_model(tmp_path / "relu.onnx")
    assert info.output_names == ["y"] and info.whole_batch == []
