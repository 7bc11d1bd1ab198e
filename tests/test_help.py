"""The command line's help, pinned: every command's help text against tests/snapshots/help/
(for the typer range pyproject.toml pins), and the conventions it must keep: one meaning per
short flag across every command, no type column for flags.

Regenerate after a deliberate change: HSPI_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_help.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hspi_onnx.cli import app

SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"


def _commands(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    yield path, cmd
    if hasattr(cmd, "commands"):  # a group
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands()]


# Every command's help, rendered in one fresh process (as `hspi CMD --help` prints it there).
_RENDER = """
import contextlib, io, json, sys
from hspi_onnx.cli import main
out = {}
for path in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            assert not exc.code, (path, exc.code)
    out[" ".join(path)] = buf.getvalue()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _RENDER, json.dumps([list(p) for p in COMMANDS])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "hspi")
def test_help_matches_its_snapshot(path, helps):
    text = helps[" ".join(path)]
    snap = SNAPSHOTS / (("_".join(path) or "hspi") + ".txt")
    if os.environ.get("HSPI_UPDATE_SNAPSHOTS"):
        snap.write_text(text)
    assert snap.is_file(), f"no snapshot {snap.name}; run with HSPI_UPDATE_SNAPSHOTS=1"
    assert text == snap.read_text(), f"help of `hspi {' '.join(path)}` changed; review and regenerate"
    assert "<bool>" not in text and "[default: False]" not in text


def test_every_command_has_a_snapshot_and_no_stale_ones():
    want = {("_".join(p) or "hspi") + ".txt" for p in COMMANDS}
    assert {p.name for p in SNAPSHOTS.glob("*.txt")} == want


def test_one_meaning_per_short_flag():
    meaning: dict[str, set[str]] = {}
    for path, cmd in _commands():
        for param in cmd.params:
            if not isinstance(param, typer.core.TyperOption):
                continue
            shorts = [o for o in param.opts if len(o) == 2]
            longs = tuple(sorted(o.rstrip("s") for o in param.opts if len(o) > 2))  # --platform(s): one meaning
            for s in shorts:
                meaning.setdefault(s, set()).add(longs)
    clashes = {s: m for s, m in meaning.items() if len(m) > 1}
    assert not clashes, clashes
    assert meaning["-n"] == {()} and meaning["-p"] == {("--platform",)}  # -n: always a probe count
