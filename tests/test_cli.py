import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import hspi
from hspi_onnx.cli import main

HEAVY = (
    "torch",
    "onnxruntime",
    "openvino",
    "tensorrt",
    "onnx",
    "numpy",
    "sklearn",
    "fastapi",
    "uvicorn",
    "httpx",
    "kserve",
    "ray",
)


def test_help_imports_no_runtime():
    """Lazy imports: help never loads a runtime (its time is measured by bench/help_time.py)."""
    code = (
        "import sys\n"
        "from hspi_onnx.cli import main\n"
        "for args in (['--help'], ['db', 'build', '--help'], ['match', '--help'], ['serve', '--help'], ['query', '--help']):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _call(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_unknown_label_is_one_line_with_close_matches(capsys, zoo):
    code, _, err = _call(capsys, "run", "digits", "-p", "onnxruntime/cpu/fp32/bs=8,opt=al,threads=1", "-o", "/dev/null")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: no platform matches")
    label = "onnxruntime@0.1/cpu:x/fp32/bs=8,opt=all,threads=1"
    code, _, err = _call(capsys, "run", "digits", "-p", label, "-o", "/dev/null")
    assert code == 2 and "close matches: onnxruntime@" in err and err.count("\n") == 1


def _external_model(tmp_path: Path, location: str) -> Path:
    t = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    t.external_data.add(key="length", value="8")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])],
        [t],
    )
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(helper.make_model(graph, ir_version=9).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "link.bin"])
def test_external_data_outside_the_model_directory_is_refused(capsys, tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    path = _external_model(tmp_path, location)
    os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    code, _, err = _call(capsys, "probes", "make", path, "-o", tmp_path / "p.npz")
    assert code == 2 and "refusing ONNX model" in err and err.count("\n") == 1


def test_external_data_inside_the_directory_is_accepted(capsys, tmp_path):
    path = _external_model(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(np.array([1, 2], np.float32).tobytes())
    code, out, _ = _call(capsys, "probes", "make", path, "-n", "3", "-o", tmp_path / "p.npz", "--json")
    assert code == 0 and json.loads(out)["n"] == 3


@pytest.mark.parametrize("content", [None, b"", b"\x08\x07garbage\xff" * 10])
def test_missing_or_corrupt_onnx_exits_2(capsys, tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    code, _, err = _call(capsys, "run", path, "-p", "x", "-o", tmp_path / "o.npz")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path):
    r = hspi("--debug", "probes", "make", tmp_path / "none.onnx", "-o", tmp_path / "p.npz")
    code, err = r.returncode, r.stderr
    assert code != 0 and "Traceback" in err and "BadModelError" in err
    r = hspi("probes", "make", tmp_path / "none.onnx", "-o", tmp_path / "p.npz")
    code, err = r.returncode, r.stderr
    assert code == 2 and "Traceback" not in err


def test_run_writes_lossless_outputs(capsys, tmp_path, zoo):
    from hspi_onnx.outputs import load_run

    probes = tmp_path / "p.npz"
    assert _call(capsys, "probes", "make", "lm", "--kind", "text", "-n", "5", "-o", probes)[0] == 0
    out = tmp_path / "o.npz"
    code, stdout, _ = _call(
        capsys,
        "run",
        "lm",
        "-p",
        "pytorch/*/bf16/bs=1,src=module,threads=1",
        "--probes",
        probes,
        "-o",
        out,
        "--json",
        "-q",
    )
    assert code == 0
    summary = json.loads(stdout)
    res = load_run(out)
    assert summary["outputs"] == {"logits": {"dtype": "bfloat16", "shape": [5, 256]}}
    assert res.dtypes() == {"logits": "bfloat16"} and res.outputs["logits"].shape == (5, 256)
    assert summary["digest"] == res.set_digest()
    assert res.platform == summary["platform"] and res.probes_sha256 == summary["probes_sha256"]


def test_listings_have_json(capsys, zoo):
    code, out, _ = _call(capsys, "models", "list", "--json")
    assert code == 0 and {m["name"] for m in json.loads(out)} == {
        "resnet",
        "mobilenet",
        "digits",
        "lm",
        "smollm2",
        "smollm2-logits",
    }
    code, out, _ = _call(capsys, "runtimes", "list", "--json")
    rows = {r["runtime"]: r for r in json.loads(out)}
    assert rows["onnxruntime"]["available"] and rows["onnxruntime"]["variants"] == 64
    assert rows["pytorch"]["available"] and rows["pytorch"]["variants"] == 48
    code, out, _ = _call(capsys, "runtimes", "variants", "resnet", "-p", "onnxruntime/*/fp16/*", "--json")
    assert code == 0 and len(json.loads(out)) == 16


def test_models_export(capsys, tmp_path):
    code, out, _ = _call(capsys, "models", "export", "digits", "-o", tmp_path / "d.onnx", "--json")
    assert code == 0
    meta = json.loads(out)
    assert (tmp_path / "d.weights.npz").is_file() and float(meta["metadata"]["hspi.test_accuracy"]) > 0.95


def test_models_export_into_folder(capsys, tmp_path):
    code, out, _ = _call(capsys, "models", "export", "resnet", "-o", tmp_path)
    assert code == 0 and f"wrote {tmp_path / 'resnet.onnx'}" in out.replace("\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.onnx", "resnet.weights.npz"]
