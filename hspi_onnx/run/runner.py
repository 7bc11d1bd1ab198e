"""The one execution layer: run a platform over a probe set, in this process or in a worker.

``execute`` is the run itself: fixed-size batches (the last one wraps around to the first
probes, so every probe is computed in a batch of the labelled size), every output kept exactly
as the runtime returned it, and an optional repeat of the first batches in the same session to
check determinism.

``Runner`` decides where it happens. By default every platform runs in a long-lived worker
process, one per runtime family and environment (an instruction-set cap is an environment a
runtime reads once, when it loads), so one process never mixes settings, and a runtime that
crashes — SIGSEGV, SIGABRT, the OOM killer's SIGKILL — fails that platform with the signal
named while the caller goes on; the next platform of that family gets a fresh worker. A
platform that does not answer within its time limit has its worker killed and fails the same
way. ``Runner(in_process=True)`` runs platforms without an environment of their own here, for
debugging; platforms that need one still get a worker.

Workers speak :mod:`hspi_onnx.run.wire` (JSON headers, raw array bytes, no pickle) over
pipes; their stderr goes to a file whose tail is quoted when they die, so a runtime that
writes a lot can never block them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.host import cpu_facts
from hspi_onnx.outputs import RunResult
from hspi_onnx.run import kernels, wire
from hspi_onnx.run.adapter import Adapter, require
from hspi_onnx.run.contract import Sequential

DEFAULT_TIMEOUT_S = float(os.environ.get("HSPI_PLATFORM_TIMEOUT", 3600))
START_TIMEOUT_S = 120.0


class PlatformFailed(HspiError):
    """A platform raised an error while it ran (in a worker: ``kind`` names the error type)."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class PlatformCrashed(PlatformFailed):
    """The worker running a platform died (a signal, an exit) or stopped answering."""


def failure_reason(exc: BaseException) -> str:
    """One line naming what went wrong, as a build records it."""
    kind = getattr(exc, "kind", "") or type(exc).__name__
    return f"{kind}: {exc}".splitlines()[0][:400]


def batches(n: int, bs: int) -> list[np.ndarray]:
    """Index batches of exactly ``bs``; the last one wraps around to the first probes."""
    return [np.arange(start, start + bs) % n for start in range(0, n, bs)]


def _check_outputs(platform, model, out: dict, rows: int) -> None:
    names = list(out)
    if names != model.output_names:
        raise HspiError(f"{platform} returned outputs {names}, the model has {model.output_names}")
    for name, arr in out.items():
        if arr.ndim < 1 or arr.shape[0] != rows:
            raise HspiError(
                f"{platform} returned {arr.shape[0] if arr.ndim else 0} rows of {name!r} for a batch of {rows}"
            )


def execute(
    adapter: Adapter, model, platform, probes, repeat: int = 0, on_batch: Callable[[int], None] | None = None
) -> RunResult:
    """Outputs of every probe, in this process. With ``repeat`` > 0 the first batches covering
    that many probes run again in the same session, with the same batch composition, and
    ``result.repeats`` says whether every repeated output was bit-identical; with ``bs`` > 1 the
    first probe also runs in a batch of copies of itself, and ``result.batch_independent`` says
    whether it gave the same bits (a server pads a lone request so)."""
    require(adapter)
    probes = probes.bind(model)
    n = len(probes)
    bs = int(platform.knob.get("bs", "1"))
    results: dict[str, list] = {name: [None] * n for name in model.output_names}
    owner = np.full(n, -1)  # the batch each probe's stored output came from (the last one wraps around)
    t_prepare = time.perf_counter()
    with adapter.prepare(model, platform) as session:
        state = adapter.measure(platform, session)
        kernels.check(platform, state, adapter.labelled_for(platform))
        t0 = time.perf_counter()
        for b, idx in enumerate(batches(n, bs)):
            out = session.run(probes.batch(idx))
            _check_outputs(platform, model, out, len(idx))
            fresh = 0
            for j, i in enumerate(idx):
                if results[model.output_names[0]][i] is None:
                    for name, arr in out.items():
                        results[name][i] = arr[j]
                    owner[i] = b
                    fresh += 1
            if on_batch:
                on_batch(fresh)
        seconds = time.perf_counter() - t0
        t_checks = time.perf_counter()
        repeats = None
        if repeat > 0:
            repeats = True
            for b, idx in enumerate(batches(n, bs)[: -(-min(repeat, n) // bs)]):
                again = session.run(probes.batch(idx))
                mine = owner[idx] == b  # wrapped-around probes were stored from another batch
                for name, arr in again.items():
                    before = np.stack([results[name][i] for i in idx[mine]])
                    repeats &= arr.dtype == before.dtype and arr[mine].tobytes() == before.tobytes()
        alone = None
        if repeat > 0 and bs > 1:
            copies = session.run(probes.batch(np.zeros(bs, dtype=np.int64)))
            alone = all(arr[0].tobytes() == results[name][0].tobytes() for name, arr in copies.items())
        checks = time.perf_counter() - t_checks
    outputs = {name: np.stack(rows) for name, rows in results.items()}
    return RunResult(
        str(platform),
        model.sha256,
        model.name,
        probes.name,
        probes.sha256,
        probes.ids.copy(),
        outputs,
        seconds,
        cpu_facts() | ({"kernels": state} if state else {}),
        repeats=repeats,
        batch_independent=alone,
        phases={"prepare": t0 - t_prepare, "checks": checks},
    )


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def describe_exit(code: int) -> str:
    if code < 0:
        name = _signal_name(-code)
        hint = " (the kernel's OOM killer sends it when memory runs out)" if name == "SIGKILL" else ""
        return f"crashed (killed by {name}){hint}"
    return f"failed: its worker exited with code {code}"


class Worker:
    """One long-lived worker process for one runtime family and environment."""

    def __init__(self, family: str, env: dict[str, str], entry_point: str = "") -> None:
        self.family, self.env, self.entry_point = family, dict(env), entry_point
        self.proc: subprocess.Popen | None = None
        self.stderr: IO[bytes] | None = None
        self.last_probes: tuple | None = None
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process; it says it is ready when :meth:`start` first waits for it."""
        if self.stderr is not None:
            self.stderr.close()
        self.stderr = tempfile.TemporaryFile(prefix="hspi-worker-")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hspi_onnx.run.worker", self.family, self.entry_point],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            close_fds=True,
        )
        self.last_probes = None
        self.ready = False

    def start(self) -> None:
        if not self.alive:
            self.kill()
            self.spawn()
        if not self.ready:
            assert self.proc is not None and self.proc.stdout is not None  # spawned above, with pipes
            header, _ = wire.recv(self.proc.stdout.fileno(), time.monotonic() + START_TIMEOUT_S)
            if header.get("event") != "ready":
                raise HspiError(f"worker for {self.family} did not start: {header}")
            self.ready = True

    def stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - 4096))
        lines = [ln for ln in self.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "no message"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                assert pipe is not None  # spawned with both pipes
                pipe.close()

    def ask_to_exit(self) -> None:
        """Tell the worker to exit (it unloads its runtime on its own time: :meth:`close` waits)."""
        if self.alive:
            assert self.proc is not None and self.proc.stdin is not None  # alive: spawned, with pipes
            try:
                wire.send(self.proc.stdin.fileno(), {"op": "exit"})
            except OSError:
                pass

    def close(self) -> None:
        self.ask_to_exit()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


def _reap(workers: list[Worker]) -> None:
    for w in workers:
        w.close()


class Runner(Sequential):
    """Runs platforms: in worker processes (default) or, ``in_process``, here; implements the
    runner contract (:mod:`hspi_onnx.run.contract`) with ``run`` and a sequential ``stream``."""

    def __init__(self, in_process: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.in_process, self.timeout = in_process, timeout
        self.workers: dict[tuple, Worker] = {}
        self.waited_for_workers = 0.0  # seconds spent waiting for workers to start (bench breakdown)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, wait: bool = False) -> None:
        """Ask every worker to exit. Unloading a runtime takes a worker tens of milliseconds that
        nothing here waits on: they are reaped by a background thread (``wait``: here), which
        kills any that has not exited within 10 s."""
        workers = list(self.workers.values())
        self.workers.clear()
        for w in workers:
            w.ask_to_exit()
        if wait:
            _reap(workers)
        elif workers:
            import threading

            threading.Thread(target=_reap, args=(workers,), name="hspi-reap-workers", daemon=True).start()

    def _worker(self, adapter: Adapter, platform) -> Worker | None:
        """The worker that runs ``platform`` (None: this process does)."""
        env = adapter.environment(platform)
        if self.in_process and not env:
            return None
        key = (adapter.name, tuple(sorted(env.items())))
        if key not in self.workers:
            self.workers[key] = Worker(adapter.name, env, adapter.entry_point)
        return self.workers[key]

    def prestart(self, adapter: Adapter, platform) -> None:
        """Start the worker ``platform`` will need, without waiting: its start-up then overlaps
        with what the caller does before the first run."""
        worker = self._worker(adapter, platform)
        if worker is not None and not worker.alive:
            worker.kill()
            worker.spawn()

    def run(
        self, adapter: Adapter, model, platform, probes, repeat: int = 0, on_batch: Callable[[int], None] | None = None
    ) -> RunResult:
        require(adapter)
        probes = probes.bind(model)
        worker = self._worker(adapter, platform)
        if worker is None:
            return execute(adapter, model, platform, probes, repeat, on_batch)
        return self._remote(worker, model, platform, probes, repeat, on_batch)

    def _remote(self, worker: Worker, model, platform, probes, repeat, on_batch) -> RunResult:
        label = str(platform)
        try:
            t0 = time.monotonic()
            worker.start()
            self.waited_for_workers += time.monotonic() - t0
            described, arrays = probes.to_wire()
            header = {
                "op": "run",
                "platform": label,
                "repeat": int(repeat),
                "model": model.to_wire(),
                "probes": described,
            }
            sent = (probes.sha256, len(probes), probes.ids.tobytes())  # a sample keeps its set's hash
            if sent != worker.last_probes:
                header["probes"]["attached"] = True
            else:
                arrays = []
            proc = worker.proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None  # started, with pipes
            wire.send(proc.stdin.fileno(), header, arrays)
            worker.last_probes = sent  # the worker keeps the last probe set it was sent
            deadline = time.monotonic() + self.timeout
            while True:
                reply, out = wire.recv(proc.stdout.fileno(), deadline)
                event = reply.get("event")
                if event == "advance":
                    if on_batch:
                        on_batch(int(reply["k"]))
                elif event == "result":
                    outputs = dict(zip(reply["names"], out))
                    return RunResult(
                        label,
                        model.sha256,
                        model.name,
                        probes.name,
                        probes.sha256,
                        probes.ids.copy(),
                        outputs,
                        float(reply["seconds"]),
                        reply["host"],
                        repeats=reply["repeats"],
                        batch_independent=reply.get("batch_independent"),
                        phases=reply.get("phases", {}),
                    )
                elif event == "error":
                    raise PlatformFailed(reply["message"], reply.get("type", ""))
                else:
                    raise PlatformCrashed(f"{label}: unexpected reply from its worker: {str(reply)[:200]}")
        except wire.WireTimeout:
            worker.kill()
            raise PlatformCrashed(f"{label} did not finish within {self.timeout:.0f} s; its worker was killed")
        except (wire.WireClosed, BrokenPipeError, ConnectionResetError):
            code = worker.proc.wait(timeout=30) if worker.proc is not None else -1
            tail = worker.stderr_tail()
            worker.kill()
            raise PlatformCrashed(f"{label} {describe_exit(code)}: {tail}")
