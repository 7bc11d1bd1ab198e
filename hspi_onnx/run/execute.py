"""Run one platform over a probe set: fixed-size batches, outputs kept exactly as returned."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from hspi_onnx.run.adapter import Adapter, require
from hspi_onnx.errors import HspiError
from hspi_onnx.host import cpu_facts
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.outputs import RunResult
from hspi_onnx.labels import Platform
from hspi_onnx.inputs.probes import ProbeSet


def batches(n: int, bs: int) -> list[np.ndarray]:
    """Index batches of exactly ``bs``; the last one wraps around to the first probes, so every
    probe is computed in a batch of the labelled size."""
    out = []
    for start in range(0, n, bs):
        idx = np.arange(start, start + bs) % n
        out.append(idx)
    return out


def run_platform(adapter: Adapter, model: ModelInfo, platform: Platform, probes: ProbeSet,
                 on_batch: Callable[[int], None] | None = None, repeat: int = 0,
                 isolate: bool | None = None) -> RunResult:
    """Outputs of every probe. With ``repeat`` > 0 the first batches covering that many probes
    run again in the same session, with the same batch composition, and ``result.repeats``
    says whether every repeated output was bit-identical. Platforms that need their own
    environment (or adapters marked ``isolated``) run in a child process (``isolate=None``
    decides by the adapter; the child passes ``False``)."""
    require(adapter)
    probes.check_fits(model.spec)
    env = adapter.environment(platform)
    if isolate or (isolate is None and (env or adapter.isolated)):
        from hspi_onnx.run.isolate import run_isolated

        result = run_isolated(adapter, model, platform, probes, env, repeat)
        if on_batch:
            on_batch(len(probes))
        return result
    n = len(probes)
    bs = int(platform.knob.get("bs", "1"))
    results: list[np.ndarray | None] = [None] * n
    with adapter.prepare(model, platform) as session:
        t0 = time.perf_counter()
        for idx in batches(n, bs):
            out = session.run(probes.inputs[idx])
            if out.shape[0] != len(idx):
                raise HspiError(f"{platform} returned {out.shape[0]} outputs for a batch of {len(idx)}")
            fresh = 0
            for j, i in enumerate(idx):
                if results[i] is None:
                    results[i] = out[j]
                    fresh += 1
            if on_batch:
                on_batch(fresh)
        seconds = time.perf_counter() - t0
        repeats = None
        if repeat > 0:
            again = batches(n, bs)[: -(-min(repeat, n) // bs)]
            repeats = all(np.array_equal(session.run(probes.inputs[idx]).view(np.uint8),
                                         np.stack([results[i] for i in idx]).view(np.uint8)) for idx in again)
    outputs = np.stack(results)
    return RunResult(str(platform), model.sha256, model.name, probes.name, probes.sha256,
                     probes.ids.copy(), outputs, seconds, cpu_facts(), repeats=repeats)
