"""A GPU machine may offer only what its image has (torch, onnx, onnxruntime; no OpenVINO, Ray
or CatBoost, issue 32): building a DB and matching by digest must not need the others."""

import json
import subprocess
import sys

BLOCKED = ("catboost", "openvino", "ray")

SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as where it is not installed
from hspi_onnx.cli import main
sys.argv = ["hspi", *{args!r}]
try:
    main()
except SystemExit as exc:
    sys.exit(exc.code)
"""


def _hspi_without_extras(*args: str) -> subprocess.CompletedProcess:
    code = SCRIPT.format(blocked=BLOCKED, args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_build_and_exact_match_without_catboost_openvino_or_ray(tmp_path):
    db, suspect = tmp_path / "db", tmp_path / "s.npz"
    ort = "onnxruntime/*/fp32/*bs=1,opt=all,threads=1"
    build = _hspi_without_extras(
        "db", "build", "digits", "--db", db, "-n", "8", "-p", ort, "-p", "pytorch/*/fp32/*bs=1*nchw*threads=1",
        "--in-process", "--json",
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert {p.split("@")[0] for p in json.loads(build.stdout)["built"]} == {"onnxruntime", "pytorch"}
    run = _hspi_without_extras("run", "digits", "-p", ort, "-n", "8", "-o", suspect)
    assert run.returncode == 0, run.stderr
    match = _hspi_without_extras("match", suspect, "--db", db, "--json")
    assert match.returncode == 0, match.stderr
    assert "onnxruntime" in json.dumps(json.loads(match.stdout)["exact"])
