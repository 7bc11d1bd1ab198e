"""Scheduling a build's jobs over a cluster's nodes, with no cluster in sight: the logic behind
``db build --ray`` (:class:`hspi_onnx.run.cluster.RayRunner`) as a plain class that a unit test
drives with fake nodes in milliseconds (tests/test_schedule.py).

Rules: jobs that the fewest nodes offer go first; each job is pulled by a node that offers it as
the node frees up, at most as many at a time per node and device kind as the node's capacity says;
a job lost with its node (or its node's worker) runs again on another node that offers it,
avoiding the one it was lost on, up to ``max_tries`` runs, else it fails; a platform that a second
node also offers runs again there on its first probes (whole batches of the platform), and the
two runs' bits are compared on the main run's result (``cross_check``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult

MAX_TRIES = 3  # runs of one job lost with their node before it is recorded as failed
POLL_S = 2.0


class Lost(Exception):
    """A job's node, or the node's worker, died under it (``node_died``: the node itself)."""

    def __init__(self, kind: str, node_died: bool) -> None:
        super().__init__(kind)
        self.kind, self.node_died = kind, node_died


def device_kind(device: str) -> str:
    return device.split(":", 1)[0]


@dataclass
class Job:
    adapter: object
    platform: Platform
    cross: bool = False  # a second node's run of the first probes
    probes: int = 0  # how many of the build's probes it runs (the first ones)
    avoid: set[str] = field(default_factory=set)  # nodes not to use: the main run's (for a cross-check), lost ones
    tries: int = 0
    node: str = ""

    @property
    def label(self) -> str:
        return str(self.platform)


class NodeLike(Protocol):
    id: str
    alive: bool
    offers: set[str]

    @property
    def short(self) -> str: ...

    def capacity(self, kind: str) -> int: ...


NodeT = TypeVar("NodeT", bound=NodeLike)  # a backend's own node class (cluster.Node for Ray)


class Backend(Protocol[NodeT]):
    """What the scheduler needs of a cluster; its nodes, of its own class, are handed back to it."""

    nodes: dict[str, NodeT]
    lost: list[str]  # ids of the nodes lost so far, in order

    def submit(self, job: Job, node: NodeT, repeat: int) -> object:
        """Start ``job`` (its first ``job.probes`` probes) on ``node``; a handle to wait on."""

    def wait(self, handles: list, timeout: float):
        """One finished handle, or None after ``timeout`` seconds."""

    def result(self, handle, job: Job):
        """The job's RunResult, or the exception its platform failed with; raises :class:`Lost`."""

    def refresh(self, dead: str = "") -> None:
        """Mark the nodes no longer alive (and ``dead``) lost."""

    def note(self, line: str) -> None: ...


class Scheduler(Generic[NodeT]):
    def __init__(
        self, backend: Backend[NodeT], cross_check: int, max_tries: int = MAX_TRIES, poll_s: float = POLL_S
    ) -> None:
        self.backend, self.cross_check, self.max_tries, self.poll_s = backend, int(cross_check), max_tries, poll_s
        self.cross_checked: dict[str, dict] = {}

    def offering(self, job: Job) -> list[NodeT]:
        return [n for n in self.backend.nodes.values() if n.alive and job.label in n.offers and n.id not in job.avoid]

    def first_probes(self, plat: Platform, n: int) -> int:
        """How many probes a cross-check runs: ``cross_check`` rounded up to whole batches of the
        platform (so each meets the batch-mates it met in the main run), at most all ``n``."""
        bs = int(plat.knob.get("bs", "1"))
        return min(n, -(-self.cross_check // bs) * bs)

    def stream(self, jobs: list[tuple], n: int, repeat: int, on_event: Callable[[str, dict], None]) -> Iterator[tuple]:
        """(adapter, platform, RunResult or exception) per job as each finishes, its cross-check
        (if a second node offers it) included; ``n`` probes per main run."""
        from hspi_onnx.run.runner import PlatformCrashed

        backend = self.backend
        offered_by = {str(p): sum(1 for nd in backend.nodes.values() if str(p) in nd.offers) for _, p in jobs}
        queue = sorted((Job(a, p, probes=n) for a, p in jobs), key=lambda j: offered_by[j.label])  # stable
        parts: dict[str, dict[str, Any]] = {
            job.label: {"left": 1} for job in queue
        }  # outcomes per label, runs still to come
        busy: Counter = Counter()
        inflight: dict = {}

        def done(job: Job, outcome) -> list[tuple]:
            """Record a run's outcome (None: a cross-check dropped); the main outcome once none is left."""
            part = parts[job.label]
            part["cross" if job.cross else "main"] = outcome
            part["cross_node" if job.cross else "main_node"] = job.node
            part["left"] -= 1
            if part["left"]:
                return []
            del parts[job.label]
            main, cross = part.get("main"), part.get("cross")
            if isinstance(main, RunResult) and isinstance(cross, RunResult):
                self.cross_checked[job.label] = cross_compare(main, cross, part["cross_node"])
            return [(job.adapter, job.platform, main)]

        def submit(job: Job, node: NodeT) -> None:
            kind = device_kind(job.platform.device)
            handle = backend.submit(job, node, 0 if job.cross else repeat)
            job.node, job.tries = node.id, job.tries + 1
            busy[(node.id, kind)] += 1
            inflight[handle] = job
            if job.cross:
                return
            on_event("start", {"platform": job.label, "n": None, "node": node.id})  # no batch progress from nodes
            second = Job(job.adapter, job.platform, cross=True, avoid={node.id})
            if self.cross_check > 0 and job.tries == 1 and self.offering(second):
                second.probes = self.first_probes(job.platform, n)
                parts[job.label]["left"] += 1
                queue.insert(0, second)

        def dispatch() -> None:
            for job in list(queue):
                kind = device_kind(job.platform.device)
                free = [nd for nd in self.offering(job) if busy[(nd.id, kind)] < nd.capacity(kind)]
                if free:
                    queue.remove(job)
                    submit(job, min(free, key=lambda nd: (busy[(nd.id, kind)], nd.id)))

        while queue or inflight:
            dispatch()
            if not inflight:  # what is queued has no live node left
                for job in list(queue):
                    queue.remove(job)
                    lost = f" (nodes lost: {', '.join(i[:12] for i in backend.lost)})" if backend.lost else ""
                    yield from done(
                        job, None if job.cross else PlatformCrashed(f"no live node offers {job.label}{lost}")
                    )
                continue
            handle = backend.wait(list(inflight), self.poll_s)
            if handle is None:
                backend.refresh()
                continue
            job = inflight.pop(handle)
            busy[(job.node, device_kind(job.platform.device))] -= 1
            try:
                outcome = backend.result(handle, job)
            except Lost as exc:
                backend.refresh(job.node if exc.node_died else "")
                job.avoid.add(job.node)  # a worker that died may die again there
                where = backend.nodes[job.node].short
                if job.tries < self.max_tries and self.offering(job):
                    backend.note(f"{job.label}: lost on node {where} ({exc.kind}); run again elsewhere")
                    queue.insert(0, job)
                    continue
                yield from done(
                    job,
                    None
                    if job.cross
                    else PlatformCrashed(
                        f"{job.label}: lost with node {where} ({exc.kind}), no other live node offers it"
                    ),
                )
                continue
            if job.cross:
                yield from done(job, outcome if isinstance(outcome, RunResult) else None)
            else:
                yield from done(job, outcome)


def cross_compare(main: RunResult, cross: RunResult, node: str) -> dict:
    """A second node's bits on the first probes against the main run's, recorded on the main
    run (``cross_check``) for the build to flag."""
    n = len(cross.ids)
    differing = np.zeros(n, dtype=bool)
    for name, values in cross.outputs.items():
        mine = main.outputs[name][:n]
        if values.dtype != mine.dtype or values.shape != mine.shape:
            differing[:] = True
        else:
            differing |= np.array([a.tobytes() != b.tobytes() for a, b in zip(values, mine)])
    record = {
        "probes": n,
        "differing": int(differing.sum()),
        "where": f"node {node[:12]}, {cross.host.get('cpu_model', '?')}",
        "nodes": [main.host.get("ray_node"), node],
    }
    main.cross_check = record
    return record
