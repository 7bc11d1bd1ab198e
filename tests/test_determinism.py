import json

import pytest

from conftest import hspi
from hspi_onnx.run.survey import summarize

# The default CPU matrix per model, from the adapters' grids (docs/labels.md):
# ONNX Runtime: 4 precision recipes (fp32, fp16, int8 dynamic, int8 QDQ) x 4 optimization levels
# x 2 batch sizes x 2 thread counts = 64, on every model;
# PyTorch: 3 precisions x 2 batch sizes x 2 thread counts x sources (zoo module, ONNX converter: 2)
# x layouts (nchw and nhwc for image models: 2, plain for the LM: 1) = 48 (digits), 24 (lm).
ORT = 4 * 4 * 2 * 2
TORCH = {"digits": 3 * 2 * 2 * 2 * 2, "lm": 3 * 2 * 2 * 2 * 1}


@pytest.mark.slow
def test_every_cpu_platform_repeats_across_fresh_processes():
    """`hspi survey` runs the matrix in two fresh worker processes; nothing may differ."""
    proc = hspi("survey", "-m", "digits", "-m", "lm", "-n", "6", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passes"] == 2
    counts = {m["model"]: m["n_platforms"] for m in report["models"]}
    from hspi_onnx.runtimes.openvino import supported_precisions

    # OpenVINO: the precisions this CPU supports x 2 batch sizes x 2 thread counts
    ov = 2 * 2 * sum(1 for reason in supported_precisions().values() if not reason)
    ref = 2 * 2  # ONNX reference evaluator: fp32 / fp64 x 2 batch sizes
    assert counts == {m: ORT + TORCH[m] + ov + ref for m in ("digits", "lm")}
    for m in report["models"]:
        assert m["failed"] == []
        assert m["not_repeating"] == [], m["not_repeating"]
        assert 1 < m["n_classes"] < m["n_platforms"]


def test_a_platform_that_changes_between_passes_is_flagged():
    row = {"model": "m", "model_sha256": "s", "probes": "p", "probes_sha256": "h", "dtype": "float32"}
    first = [row | {"platform": "a", "digest": "1"}, row | {"platform": "b", "digest": "1"}]
    second = [row | {"platform": "a", "digest": "1"}, row | {"platform": "b", "digest": "2"}]
    report = summarize([first, second])
    assert report["models"][0]["not_repeating"] == ["b"]
    assert [c["repeats"] for c in report["models"][0]["classes"]] == [False]
