"""`hspi demo --quick` end to end: build, train, evaluate, a black box over HTTP (hspi serve,
hspi query), match, verify."""

import subprocess
import sys


def test_quick_demo_names_the_hidden_platform(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "hspi_onnx.cli", "demo", "--quick", "-n", "40", "--seed", "3",
                        "-o", str(out), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "matcher named it" in r.stdout
    assert "true claim -> CONSISTENT, false claim -> INCONSISTENT" in r.stdout
    assert (out / "suspect.jsonl").is_file() and (out / "classifier" / "classifier.json").is_file()
    assert list((out / "plots").glob("*.png"))
