import json
import subprocess
import sys

from hspi_onnx.run.survey import summarize


def test_every_cpu_platform_repeats_across_fresh_processes():
    """`hspi survey` runs the matrix in two fresh worker processes; nothing may differ."""
    proc = subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", "survey", "-m", "digits", "-m", "lm", "-n", "6", "--json", "-q"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passes"] == 2
    counts = {m["model"]: m["n_platforms"] for m in report["models"]}
    from hspi_onnx.runtimes.openvino import supported_precisions

    ov = 4 * sum(1 for reason in supported_precisions().values() if not reason)  # OpenVINO on this CPU
    ref = 4  # ONNX reference evaluator: fp32 / fp64 x 2 batch sizes
    assert counts == {"digits": 112 + ov + ref, "lm": 88 + ov + ref}
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
