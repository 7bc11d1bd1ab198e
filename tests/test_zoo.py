import numpy as np
import onnx
import pytest

from hspi_onnx.inputs.onnxfile import sha256_file
from hspi_onnx.models import SMALL


@pytest.mark.parametrize("name", list(SMALL))
def test_export_is_valid_onnx_with_dynamic_batch(zoo, name):
    info = zoo[name]
    model = onnx.load(info.path)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    assert info.zoo == name and info.sha256 == sha256_file(info.path)


@pytest.mark.parametrize("name", list(SMALL))
def test_onnxruntime_equals_the_module(zoo, name):
    import onnxruntime as ort
    import torch

    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.models.export import load_module

    info = zoo[name]
    module = load_module(name, info.weights_path(), info.metadata["hspi.weights_sha256"])
    x = generate(info, n=5, seed=3).primary
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {info.primary.name: x})[0]
    assert got.shape == want.shape == (5, {"lm": 256}.get(name, 10))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_export_is_deterministic(tmp_path):
    from hspi_onnx.models import export_model

    a = sha256_file(export_model("mobilenet", tmp_path / "a.onnx"))
    b = sha256_file(export_model("mobilenet", tmp_path / "b.onnx"))
    assert a == b


def test_digits_classifier_is_trained_on_real_data(zoo):
    meta = zoo["digits"].metadata
    assert float(meta["hspi.test_accuracy"]) >= 0.95
    assert int(meta["hspi.test_size"]) == 450
