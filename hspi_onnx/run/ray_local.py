"""A Ray cluster of several nodes on this one machine, for tests, benchmarks and trying
``hspi db build --ray`` without a second machine.

Each node is ``ray start ... --block`` in a process group of its own, with the custom resources
``hspi runtimes resources`` prints under that node's environment (e.g. ``HSPI_RUNTIMES`` or
``HSPI_ISA_CAP``, so that nodes differ as machines do); killing the group kills the node, its
raylet and every worker process under it. Node death is noticed within a few seconds (shorter
health checks than Ray's defaults).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FAST_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "1000",
}
START_TIMEOUT_S = 120.0
# Each node's object store: room for the largest zoo model (SmolLM2 in float32 is 539 MB) without
# spilling to disk, which Ray refuses once the disk is 95 % full. Shared memory is taken as used.
OBJECT_STORE_BYTES = 1_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resources(env: dict) -> str:
    """``hspi runtimes resources`` under ``env``, as a node started with it would declare."""
    return subprocess.run(
        [str(BIN / "hspi"), "runtimes", "resources"], env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout.strip()


class LocalCluster:
    def __init__(self, object_store_bytes: int = OBJECT_STORE_BYTES) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = _free_port()
        self.client_address = f"ray://127.0.0.1:{self.client_port}"  # Ray client, served by the head
        self.temp = tempfile.mkdtemp(prefix="hspiray-", dir="/tmp")  # unix socket paths must stay short
        self.procs: list[subprocess.Popen] = []
        self.base = {**os.environ, **FAST_DEATH}
        self.store = str(object_store_bytes)

    def _start(self, args: list[str], env: dict, cpus: int, cores: set[int] | None) -> subprocess.Popen:
        log = open(Path(self.temp) / f"node{len(self.procs)}.log", "wb")
        pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--num-cpus",
                str(cpus),
                "--object-store-memory",
                self.store,
                "--disable-usage-stats",
                "--block",
                *args,
            ],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=pin,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def head(self, env: dict | None = None, cpus: int = 1, cores: set[int] | None = None) -> subprocess.Popen:
        """The head node (``cores``: the CPU cores its processes may use, as a machine of its own)."""
        env = {**self.base, **(env or {})}
        proc = self._start(
            [
                "--head",
                "--port",
                str(self.port),
                "--ray-client-server-port",
                str(self.client_port),
                "--include-dashboard",
                "false",
                "--temp-dir",
                self.temp,
                "--resources",
                resources(env),
            ],
            env,
            cpus,
            cores,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return proc
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the Ray head node did not start (log: {self.temp})")
                time.sleep(0.2)

    def worker(self, env: dict | None = None, cpus: int = 1, cores: set[int] | None = None) -> subprocess.Popen:
        env = {**self.base, **(env or {})}
        return self._start(["--address", self.address, "--resources", resources(env)], env, cpus, cores)

    def wait_nodes(self, n: int) -> None:
        """Until exactly ``n`` nodes are alive (asked from a separate driver process)."""
        code = (
            "import ray,time,sys\nray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
            "t=time.monotonic()\nwhile sum(x['Alive'] for x in ray.nodes()) != int(sys.argv[2]):\n"
            f"    assert time.monotonic()-t < {START_TIMEOUT_S}, ray.nodes()\n    time.sleep(0.3)\n"
        )
        subprocess.run([sys.executable, "-c", code, self.address, str(n)], check=True, timeout=START_TIMEOUT_S + 60)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        """Kill every node; their session directory goes too unless ``HSPI_KEEP_RAY_LOGS`` is set."""
        for proc in self.procs:
            self.kill(proc)
        if not os.environ.get("HSPI_KEEP_RAY_LOGS"):
            shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
