"""The wheel holds every module: setup.py discovers the packages (hspi_onnx/ and the two folders
mapped into it, runtimes/ and models/), so a new subpackage cannot be left out silently. The
wheel is built from a copy of the sources (no stale build/ folder), unpacked, and every module
is imported from the unpacked copy in a fresh process."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("hspi_onnx", "runtimes", "models")


def _source_modules() -> set[str]:
    """Dotted names of every module in the source tree, as installed."""
    prefix = {"hspi_onnx": "hspi_onnx", "runtimes": "hspi_onnx.runtimes", "models": "hspi_onnx.models"}
    names = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join((prefix[folder], *parts)))
    return names


def test_wheel_holds_and_imports_every_module(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("hspi_onnx-*.whl")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)

    expected = _source_modules()
    in_wheel = set()
    for path in (unpacked / "hspi_onnx").rglob("*.py"):
        parts = path.relative_to(unpacked).with_suffix("").parts
        in_wheel.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert in_wheel == expected, f"missing from the wheel: {sorted(expected - in_wheel)}"

    # import each from the unpacked wheel (not the editable install of the checkout); a
    # __main__ module runs the command line when imported, so it is only checked for presence
    importable = sorted(name for name in expected if not name.endswith(".__main__"))
    script = (
        "import importlib, json, sys\n"
        "names = json.loads(sys.stdin.read()); where = {}\n"
        "for name in names:\n"
        "    where[name] = importlib.import_module(name).__file__\n"
        "print(json.dumps(where))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(importable),
        cwd=unpacked,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unpacked), "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    where = json.loads(ran.stdout.strip().splitlines()[-1])
    outside = {name: path for name, path in where.items() if not Path(path).is_relative_to(unpacked)}
    assert not outside, f"imported from outside the wheel: {outside}"
