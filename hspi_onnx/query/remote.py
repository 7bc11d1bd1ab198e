"""Reference rows from another machine: ``hspi db build MODEL --remote URL``.

The remote machine runs ``hspi serve MODEL -p PLATFORM --reveal-platform``: the one platform it
serves is named at ``GET /hspi/v1/platform`` (its label carries that machine's device and ISA),
with the model's sha256, which must be the local model's. The probes then go over KServe v2 with
binary outputs, in requests of whole batches of the platform's ``bs`` (the server runs each
request in batches of ``bs``, so every probe meets the same batch composition as in a local
build), and the raw output bytes come back in their dtype. The first ``repeat`` probes are asked
twice: a second answer that differs marks the platform not repeatable, as a local build does.

:class:`RemoteRunner` has a :class:`~hspi_onnx.run.runner.Runner`'s ``run``, so
:func:`hspi_onnx.db.build.build` writes the shards with its usual manifest, atomicity and resume.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult
from hspi_onnx.run.contract import Sequential

from . import kserve
from .transport import QueryError, Transport

ROWS_PER_REQUEST = 64  # rounded up to whole batches of the platform


class RemoteRunner(Sequential):
    """The runner contract (:mod:`hspi_onnx.run.contract`) over a remote ``hspi serve``."""

    def __init__(self, url: str, authorization: str | None = None, timeout: float = 600.0, retries: int = 3) -> None:
        self.transport = Transport(url.rstrip("/"), timeout, retries, None, authorization)
        self.url = self.transport.shown

    def served(self, model) -> tuple[Platform, dict]:
        """(the platform served, the remote facts), after checking it serves ``model``."""
        where = f"GET {self.url}/hspi/v1/platform"
        reply = self.transport.request("GET", "/hspi/v1/platform")
        if reply.status == 404:
            raise QueryError(
                f"{where}: HTTP 404; start the server with `hspi serve MODEL -p PLATFORM --reveal-platform`"
            )
        try:
            doc: Any = json.loads(reply.body) if reply.status == 200 else None  # None: TypeError below
            platform = Platform.parse(doc["platform"])
            served, sha = str(doc["model"]), str(doc["model_sha256"])
            host = doc.get("host") if isinstance(doc.get("host"), dict) else {}
        except (ValueError, KeyError, TypeError) as exc:
            raise QueryError(
                f"{where}: HTTP {reply.status}, not an hspi serve platform record ({type(exc).__name__})"
            ) from None
        if sha != model.sha256:
            raise QueryError(
                f"{self.url} serves model {served!r} with sha256 {sha[:12]}, not {model.name}'s "
                f"{model.sha256[:12]}: serve the same ONNX file there"
            )
        return platform, {"model": served, "host": host, "url": self.url}

    def prestart(self, *args) -> None:
        pass

    def run(self, adapter, model, platform: Platform, probes, repeat: int = 0, on_batch=None) -> RunResult:
        served, facts = self.served(model)
        if str(served) != str(platform):
            raise QueryError(f"{self.url} now serves {served}, not {platform}")
        probes = probes.bind(model)
        n, bs = len(probes), int(platform.knob.get("bs", "1"))
        rows = max(bs, ROWS_PER_REQUEST // bs * bs)
        names = model.output_names
        path = kserve.infer_path(facts["model"])
        inputs = kserve.input_names(list(probes.inputs), {"inputs": [{"name": s.name} for s in model.inputs]})

        def ask(sel: np.ndarray) -> dict[str, np.ndarray]:
            body = kserve.request_body(
                {k: x[sel] for k, x in probes.inputs.items()}, inputs, str(int(probes.ids[sel[0]])), True, None
            )
            reply = self.transport.request("POST", path, body)
            return kserve.binary_outputs(reply, f"POST {self.url}{path} (probes {sel[0]}..{sel[-1]})", len(sel), names)

        t0 = time.perf_counter()
        parts = []
        for s in range(0, n, rows):
            sel = np.arange(s, min(s + rows, n))
            parts.append(ask(sel))
            if on_batch:
                on_batch(len(sel))
        outputs = {k: np.concatenate([p[k] for p in parts]) for k in names}
        seconds = time.perf_counter() - t0
        repeats = alone = None
        if repeat > 0:
            again = ask(np.arange(min(rows, n)))
            repeats = all(
                a.dtype == outputs[k].dtype and a.tobytes() == outputs[k][: len(a)].tobytes() for k, a in again.items()
            )
            if bs > 1:  # a lone probe: the server pads its batch with copies of it
                alone = all(a[0].tobytes() == outputs[k][0].tobytes() for k, a in ask(np.arange(1)).items())
        host = {**facts["host"], "remote": self.url}
        return RunResult(
            str(platform),
            model.sha256,
            model.name,
            probes.name,
            probes.sha256,
            probes.ids.copy(),
            outputs,
            seconds,
            host,
            repeats=repeats,
            batch_independent=alone,
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RemoteRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
