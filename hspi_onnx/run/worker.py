"""A worker process: ``python -m hspi_onnx.run.worker FAMILY`` runs platforms of one runtime
family on request from :class:`hspi_onnx.run.runner.Runner`, until told to exit.

Frames go to the file descriptor stdout had at start; stdout itself is pointed at stderr
first, so whatever a runtime prints can never corrupt a frame. Models and probe sets are kept
between requests (by digest), so a build sends each probe set once per worker.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings


class _Progress:
    """Batch counts sent on to the caller at most every PROGRESS_S seconds (a frame per batch
    would cost more than a small batch itself)."""

    PROGRESS_S = 0.1

    def __init__(self, fd_out: int) -> None:
        self.fd_out, self.pending, self.last = fd_out, 0, time.monotonic()

    def __call__(self, k: int) -> None:
        from hspi_onnx.run import wire

        self.pending += int(k)
        now = time.monotonic()
        if now - self.last >= self.PROGRESS_S:
            wire.send(self.fd_out, {"event": "advance", "k": self.pending})
            self.pending, self.last = 0, now


def _serve(family: str, fd_in: int, fd_out: int, entry_point: str = "") -> None:
    from hspi_onnx.errors import HspiError
    from hspi_onnx.inputs.model import ModelInfo, open_model, resolve_model
    from hspi_onnx.inputs.onnxfile import sha256_file
    from hspi_onnx.inputs.probes import ProbeSet
    from hspi_onnx.labels import Platform
    from hspi_onnx.run import wire
    from hspi_onnx.run.adapter import load_adapter
    from hspi_onnx.run.runner import execute

    models: dict[str, object] = {}
    probe_sets: dict[str, ProbeSet] = {}
    adapters = {}
    try:  # load the family's runtime now: a worker is started ahead of its first platform
        adapters[family] = load_adapter(family, entry_point)
        adapters[family].available()
    except Exception:  # the request will say what is wrong
        pass
    wire.send(fd_out, {"event": "ready", "pid": os.getpid()})
    while True:
        try:
            req, arrays = wire.recv(fd_in)
        except wire.WireClosed:
            return
        if req.get("op") == "exit":
            return
        try:
            m = req["model"]
            model = models.get(m["sha256"])
            if model is None:  # the file the caller resolved and described (a zoo model is exported
                # again if it went); its bytes are checked, its graph is parsed by the adapter alone
                if os.path.isfile(m["path"]) and sha256_file(m["path"]) == m["sha256"]:
                    model = ModelInfo.from_wire(m)
                else:
                    model = resolve_model(m["zoo"]) if m.get("zoo") else open_model(m["path"])
                if model.sha256 != m["sha256"]:
                    raise HspiError(f"model {m['path']} changed while the build ran")
                models[m["sha256"]] = model
            p = req["probes"]
            if p.get("attached"):  # keep one probe set: a build uses one at a time
                probe_sets = {p["sha256"]: ProbeSet.from_wire(p, arrays)}
            probes = probe_sets[p["sha256"]]
            platform = Platform.parse(req["platform"])
            adapter = adapters.get(platform.runtime) or load_adapter(platform.runtime)
            result = execute(adapter, model, platform, probes, int(req["repeat"]), on_batch=_Progress(fd_out))
            wire.send(
                fd_out,
                {
                    "event": "result",
                    "names": result.output_names,
                    "seconds": result.seconds,
                    "repeats": result.repeats,
                    "batch_independent": result.batch_independent,
                    "host": result.host,
                    "phases": result.phases,
                },
                list(result.outputs.values()),
            )
        except HspiError as exc:
            wire.send(fd_out, {"event": "error", "type": type(exc).__name__, "message": str(exc)})
        except Exception as exc:  # a runtime's own error: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            wire.send(fd_out, {"event": "error", "type": type(exc).__name__, "message": str(exc)})


def main() -> int:
    warnings.filterwarnings("ignore")
    fd_out = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, not into the frames
    sys.stdout = sys.stderr
    _serve(sys.argv[1] if len(sys.argv) > 1 else "", 0, fd_out, sys.argv[2] if len(sys.argv) > 2 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
