"""The example plugin under tests/plugin_example, installed with pip into a private directory:
its adapter appears in `hspi runtimes list` and builds a shard, through the entry point only."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import hspi

pytestmark = pytest.mark.slow  # pip installs the plugin into a directory of its own

PLUGIN = Path(__file__).parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_plugin_is_listed(plugin_env):
    r = hspi("runtimes", "list", "--model", "digits", "--json", env=plugin_env)
    assert r.returncode == 0, r.stderr
    rows = {row["runtime"]: row for row in json.loads(r.stdout)}
    assert rows["ortdaz"]["available"] and rows["ortdaz"]["variants"] == 4
    assert "onnxruntime" in rows and "pytorch" in rows


def test_plugin_builds_a_shard(plugin_env, tmp_path):
    r = hspi(
        "db",
        "build",
        "digits",
        "--db",
        tmp_path / "db",
        "-p",
        "ortdaz/*/fp32/bs=1,daz=on",
        "-n",
        "8",
        "--json",
        "-q",
        env=plugin_env,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert len(report["built"]) == 1 and report["built"][0].startswith("ortdaz@")
    shards = list((tmp_path / "db" / "shards").glob("*/*/*.parquet"))
    assert len(shards) == 1


def test_plugin_is_absent_without_its_install():
    r = hspi("runtimes", "list", "--model", "digits", "--json")
    assert "ortdaz" not in {row["runtime"] for row in json.loads(r.stdout)}
