"""``hspi serve`` in a child process, for callers that need a live black box: the demo, the
throughput bench, tests. Started, waited for until it answers ``/v2/health/ready``, stopped."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from hspi_onnx.errors import HspiError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (for a server that must keep its URL across a restart)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self, model: str, platform: str, port: int = 0, host: str = "127.0.0.1", extra: tuple[str, ...] = ()
    ) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+", prefix="hspi-serve-")
        self.argv = [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "serve",
            str(model),
            "-p",
            platform,
            "--port",
            str(port),
            "--host",
            host,
            *extra,
        ]
        # its own process group: kill() reaches the server's runtime worker too
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True
        )
        self.url = ""

    @property
    def host(self) -> str:
        """HOST:PORT, as clients such as tritonclient take it (once :meth:`wait` returned)."""
        return self.url.removeprefix("http://")

    def _failed(self, what: str) -> HspiError:
        self.stop()
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().splitlines() if ln.strip()]
        return HspiError(f"hspi serve {what}: {lines[-1][:300] if lines else 'no message'}")

    def wait(self, timeout: float = 180.0) -> ServerProcess:
        """Block until the server answers ready (it prints its URL once its socket is bound)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None  # started with stdout=PIPE
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise self._failed(f"did not start within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            raise self._failed("did not start")
        self.url = line.split(" on ", 1)[1].split()[0]
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None:
                    raise self._failed("exited")
                time.sleep(0.05)
        raise self._failed(f"was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL the server and its process group at once (no graceful shutdown)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=30)
        self.stop()

    def __enter__(self) -> ServerProcess:
        return self.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.stderr.close()
