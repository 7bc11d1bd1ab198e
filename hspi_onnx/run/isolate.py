"""Run one platform in a child process: for adapters that need their own environment (CPU
instruction-set caps are read once, when a runtime loads) and so that a runtime that crashes —
a segfault, an abort, the OOM killer — fails that platform instead of the whole build.

The parent writes the probes to a temporary ``.npz`` and a JSON spec (model, platform label,
repeat count), starts ``python -m hspi_onnx.run.isolate SPEC`` with the platform's environment
added, and reads the child's outputs back as an ordinary output file (safe ``.npz``, digests
checked). A child killed by a signal is reported by the signal's name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hspi_onnx.errors import HspiError

TIMEOUT_S = 3600


class PlatformCrashed(HspiError):
    """The child process running a platform died or failed."""


def run_isolated(adapter, model, platform, probes, env: dict[str, str], repeat: int = 0):
    """Like :func:`hspi_onnx.run.execute.run_platform`, in a child process with ``env`` added."""
    from hspi_onnx.outputs import load_run

    with tempfile.TemporaryDirectory(prefix="hspi-isolate-") as tmp:
        tmp = Path(tmp)
        probes.save(tmp / "probes.npz")
        spec = {"model": str(model.path), "model_sha256": model.sha256, "zoo": model.zoo,
                "platform": str(platform), "repeat": int(repeat), "probes": str(tmp / "probes.npz"),
                "out": str(tmp / "out.npz")}
        (tmp / "spec.json").write_text(json.dumps(spec), "utf-8")
        child_env = {**os.environ, **env}
        try:
            proc = subprocess.run([sys.executable, "-m", "hspi_onnx.run.isolate", str(tmp / "spec.json")],
                                  env=child_env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PlatformCrashed(f"{platform} did not finish within {TIMEOUT_S} s in its child process")
        if proc.returncode != 0:
            raise PlatformCrashed(f"{platform} {_describe(proc.returncode)}: {_tail(proc.stderr)}")
        result = load_run(tmp / "out.npz")
        meta = json.loads((tmp / "out.json").read_text("utf-8"))
        result.repeats = meta.get("repeats")
        result.seconds = float(meta.get("seconds", result.seconds))
        return result


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"crashed (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"crashed (killed by signal {-code})"
    return f"failed in its child process (exit {code})"


def _tail(stderr: str) -> str:
    lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


def _child(spec_path: str) -> int:
    from hspi_onnx.run.adapter import registry
    from hspi_onnx.run.execute import run_platform
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.labels import Platform
    from hspi_onnx.inputs.probes import load_probes

    spec = json.loads(Path(spec_path).read_text("utf-8"))
    model = resolve_model(spec["zoo"] or spec["model"])
    if model.sha256 != spec["model_sha256"]:
        print(f"model {spec['model']} changed since the build started", file=sys.stderr)
        return 2
    platform = Platform.parse(spec["platform"])
    adapter = registry()[platform.runtime]
    result = run_platform(adapter, model, platform, load_probes(spec["probes"]), repeat=spec["repeat"],
                          isolate=False)
    result.save(spec["out"])
    Path(spec["out"]).with_suffix(".json").write_text(
        json.dumps({"repeats": result.repeats, "seconds": result.seconds}), "utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_child(sys.argv[1]))
    except HspiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
