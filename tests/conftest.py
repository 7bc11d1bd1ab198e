import os
import shutil
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler

import pytest

# One cache for the whole session (zoo exports, prepared models); subprocesses inherit it, and
# it is removed at the end unless the caller gave one.
_OWN_CACHE = None if os.environ.get("HSPI_CACHE") else tempfile.mkdtemp(prefix="hspi-test-cache-")
if _OWN_CACHE:
    os.environ["HSPI_CACHE"] = _OWN_CACHE
os.environ.setdefault("PYTHONWARNINGS", "ignore")


CLI_TIMEOUT_S = 600.0


class JsonHandler(BaseHTTPRequestHandler):
    """A test server's handler: quiet, HTTP/1.1, one helper to send a whole answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def hspi(*args, env: dict | None = None, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """The command line in a fresh process (``python -m hspi_onnx.cli ARGS``), output captured as
    text, never longer than ``timeout`` seconds; ``env``: the whole environment (default: this
    process's). The one way tests run the CLI in a process of its own: `from conftest import hspi`."""
    return subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="session")
def zoo():
    """Every small zoo model (not the LLMs), exported once per session."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.models import SMALL

    return {name: resolve_model(name) for name in SMALL}


def pytest_collection_modifyitems(config, items):
    gpu = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords and not os.environ.get("HSPI_GPU"):
            item.add_marker(gpu)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
