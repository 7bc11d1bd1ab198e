"""The runner contract: what :func:`hspi_onnx.db.build.build` (and anything else that runs a plan of
platforms) may ask of a runner, whichever way it runs them: in this process or worker processes
(:class:`hspi_onnx.run.runner.Runner`), on another machine's ``hspi serve``
(:class:`hspi_onnx.query.remote.RemoteRunner`), over a Ray cluster
(:class:`hspi_onnx.run.cluster.RayRunner`). A new way to run platforms (a decode loop, a remote
endpoint) plugs in by implementing :class:`PlatformRunner`; nothing else has to change.

Every runner offers ``stream`` (the jobs' outcomes, as each finishes, in any order), ``prestart``
(a hint that a job is coming; it may do nothing) and ``close``, and is a context manager.
Runners that run one job at a time also offer ``run`` (:class:`SingleRunner`) and get ``stream``
from :class:`Sequential`, which runs the jobs in order and starts the next job's resources while
the one before it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

Outcome = tuple  # (adapter or None, Platform, RunResult or the exception the job failed with)
OnEvent = Callable[[str, dict], None]


@runtime_checkable
class PlatformRunner(Protocol):
    def prestart(self, adapter, platform) -> None:
        """A job for ``platform`` is coming: start what it needs now (may do nothing)."""

    def stream(self, jobs: list[tuple], model, probes, repeat: int, on_event: OnEvent) -> Iterator[Outcome]:
        """(adapter, platform, RunResult or exception) for each of ``jobs`` ((adapter, platform)
        pairs), as each finishes; ``on_event`` hears "start" ({"platform", "n", optional "node"})
        and "advance" ({"k": probes done}). A failed job is an outcome, never a raised exception."""

    def close(self) -> None:
        """Release what the runner holds (worker processes, connections)."""

    def __enter__(self) -> PlatformRunner: ...

    def __exit__(self, *exc) -> None: ...


@runtime_checkable
class SingleRunner(Protocol):
    """A runner that runs one platform at a time and returns its result (or raises)."""

    def run(self, adapter, model, platform, probes, repeat: int = 0, on_batch: Callable[[int], None] | None = None): ...

    def prestart(self, adapter, platform) -> None: ...


class Sequential:
    """``stream`` for a :class:`SingleRunner`: the jobs in order, each announced ("start"), its
    batches passed on ("advance"), the next job's worker started as the one before it begins (a
    new runtime family's start-up then overlaps that platform). Subclasses implement ``run``."""

    def run(self, adapter, model, platform, probes, repeat: int = 0, on_batch: Callable[[int], None] | None = None):
        raise NotImplementedError

    def prestart(self, adapter, platform) -> None:
        """Nothing to start ahead by default."""

    def stream(self, jobs: list[tuple], model, probes, repeat: int, on_event: OnEvent) -> Iterator[Outcome]:
        for k, (adapter, plat) in enumerate(jobs):
            if k + 1 < len(jobs):
                self.prestart(*jobs[k + 1])
            on_event("start", {"platform": str(plat), "n": len(probes)})
            try:
                result = self.run(
                    adapter, model, plat, probes, repeat=repeat, on_batch=lambda k: on_event("advance", {"k": k})
                )
            except Exception as exc:
                yield adapter, plat, exc
            else:
                yield adapter, plat, result
