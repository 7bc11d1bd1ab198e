"""Distributed builds on a Ray cluster: ``hspi db build MODEL --db DB --ray ADDRESS``.

The driver (this process) connects to the cluster and asks every node which platforms it
offers for the model (:func:`hspi_onnx.run.cluster_node.node_offers`): each node enumerates its
own variants, so its labels carry its device and ISA, and a node started without a runtime
(``HSPI_RUNTIMES``) or under an instruction-set cap (``HSPI_ISA_CAP``) offers what it really
runs. Each platform then goes to a node that offers it (those few nodes offer first), pulled as
nodes free up: at most one job per node and device kind at a time, or as many as the node's
``hspi:<device kind>`` resource says, and the job asks Ray for the node's custom resources of its
runtime family and device kind (``hspi runtimes resources`` prints them for ``ray start
--resources``), so that several builds sharing a cluster never overload a node. A platform that a
second node also offers runs again there on its first probes: the two machines' bits must
agree, and a disagreement is recorded as ``db merge`` records one.

Runs come back as Arrow IPC (:mod:`hspi_onnx.run.arrow_runs`);
:func:`hspi_onnx.db.build.build` commits them as it commits a local run's (manifest first,
atomic shards, resume). A node lost mid-build loses its running jobs: each runs again on another
node that offers it, or is recorded as failed; rerunning the command completes the DB.

Ray itself moves task arguments and results with its own serializer (cloudpickle): a Ray
cluster is one trust domain, as Ray's documentation says. What this module sends through it is
bytes and JSON only (ONNX files, :mod:`hspi_onnx.run.wire` frames, Arrow IPC), read on the
other side by the same checked readers as files on disk. Ray is imported only here, and only
when a build asks for it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult
from hspi_onnx.run.arrow_runs import read_result
from hspi_onnx.run.cluster_node import RESOURCE_PREFIX, node_offers, node_run

CROSS_CHECK_PROBES = 8  # one batch of the largest default batch size
DISCOVERY_TIMEOUT_S = 300.0
MAX_TRIES = 3  # runs of one job lost with their node before it is recorded as failed
POLL_S = 2.0
CLIENT_TRIES = 3  # a Ray client server sometimes fails to start a client's session (seen once in a fresh clone)


def import_ray():
    try:
        import ray
    except ImportError:
        raise HspiError("--ray needs Ray: pip install 'hspi-onnx[ray]'") from None
    return ray


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` (the device segment's first field)."""
    return device.split(":", 1)[0]


def _reachable(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT address must take a TCP connection (Ray itself would wait for it forever)."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HspiError(f"--ray {address!r}: give HOST:PORT of the head node's GCS, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise HspiError(f"cannot join the Ray cluster at {address!r}: {exc.strerror or exc}") from None


# ---- the driver -----------------------------------------------------------------------------

@dataclass
class Node:
    id: str
    address: str
    resources: dict
    facts: dict = field(default_factory=dict)
    offers: set[str] = field(default_factory=set)
    error: str = ""
    alive: bool = True

    @property
    def short(self) -> str:
        return self.id[:12]

    def capacity(self, kind: str) -> int:
        return max(1, int(self.resources.get(f"{RESOURCE_PREFIX}{kind}", 1)))

    def describe(self) -> dict:
        return {"node": self.id, "address": self.address, "alive": self.alive, "platforms": len(self.offers),
                "isa": self.facts.get("host", {}).get("isa"), "isa_cap": self.facts.get("isa_cap"),
                "cpu": self.facts.get("host", {}).get("cpu_model"),
                "hspi": self.facts.get("hspi"), "unavailable": self.facts.get("unavailable", {}),
                "custom_resources": sorted(k for k in self.resources if k.startswith(RESOURCE_PREFIX)),
                **({"error": self.error} if self.error else {})}


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


class RayRunner:
    """Runs a build's platforms over a Ray cluster (``address``: ``HOST:PORT``, ``ray://...`` or
    ``auto``); :meth:`plan` asks the nodes what they offer, :meth:`stream` runs the jobs (what
    :func:`hspi_onnx.db.build.build` calls instead of a runner's ``run``)."""

    def __init__(self, address: str, cross_check: int = CROSS_CHECK_PROBES,
                 on_note: Callable[[str], None] = lambda line: None) -> None:
        self.ray = import_ray()
        self.cross_check, self.on_note = int(cross_check), on_note
        self.nodes: dict[str, Node] = {}
        self.lost: list[str] = []
        self.cross_checked: dict[str, dict] = {}
        self.differences: list[dict] = []  # measured state the nodes differ in (run/kernels.differences)
        self._model_ref = None
        _reachable(address)
        for attempt in range(CLIENT_TRIES if address.startswith("ray://") else 1):
            try:
                self.ray.init(address=address, logging_level="ERROR", log_to_driver=False, namespace="hspi-onnx")
                break
            except ConnectionAbortedError:  # the client server's per-client server failed to start
                if attempt + 1 == CLIENT_TRIES:
                    raise HspiError(f"cannot join the Ray cluster at {address!r}: its client server failed to "
                                    f"start a session {CLIENT_TRIES} times") from None
                self.ray.shutdown()
                time.sleep(2.0)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise HspiError(f"cannot join the Ray cluster at {address!r}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        self._tasks = {fn.__name__: self.ray.remote(fn) for fn in (node_offers, node_run)}

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prestart(self, *args) -> None:
        pass

    # -- nodes and plan

    def _alive_nodes(self) -> dict[str, dict]:
        return {n["NodeID"]: n for n in self.ray.nodes() if n.get("Alive")}

    def _on_node(self, node_id: str, soft: bool = False):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id, soft=soft)

    def _ship_model(self, model) -> tuple[dict, object]:
        from hspi_onnx.inputs.onnxfile import external_data_files

        if self._model_ref is None or self._model_ref[0] != model.sha256:
            files = {model.path.name: model.path.read_bytes()}
            for rel in external_data_files(model.path):
                files[rel] = (model.path.parent / rel).read_bytes()
            if model.weights_path().is_file():  # a zoo module's weights (pytorch src=module)
                files[model.weights_path().name] = model.weights_path().read_bytes()
            self._model_ref = (model.sha256, self.ray.put(files))
        return model.to_wire(), self._model_ref[1]

    def plan(self, model, probes, patterns: list[str] | None, extra: bool) -> list[tuple[None, Platform]]:
        """Every platform some node offers (matching ``patterns``), after asking each node."""
        from hspi_onnx.inputs.probes import calibration_kind

        described, files = self._ship_model(model)
        kind = calibration_kind(model, probes.bind(model).kind)
        asked = {}
        for node_id, info in self._alive_nodes().items():
            self.nodes[node_id] = Node(node_id, str(info.get("NodeManagerAddress", "")), dict(info.get("Resources", {})))
            ref = self._tasks["node_offers"].options(num_cpus=0, max_retries=0,
                                                     scheduling_strategy=self._on_node(node_id)).remote(
                described, files, kind, patterns, extra)
            asked[ref] = node_id
        if not asked:
            raise HspiError("the Ray cluster has no live node")
        ready, late = self.ray.wait(list(asked), num_returns=len(asked), timeout=DISCOVERY_TIMEOUT_S)
        for ref in late:
            node = self.nodes[asked[ref]]
            node.error, node.alive = f"did not answer within {DISCOVERY_TIMEOUT_S:.0f} s", False
            self.ray.cancel(ref, force=True)
        for ref in ready:
            node = self.nodes[asked[ref]]
            try:
                node.facts = json.loads(self.ray.get(ref))
            except Exception as exc:
                node.error, node.alive = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", False
                continue
            from hspi_onnx import __version__

            if node.facts.get("error"):
                node.error, node.alive = node.facts["error"], False
            elif node.facts.get("hspi") != __version__:
                node.error, node.alive = f"runs hspi-onnx {node.facts.get('hspi')}, the driver {__version__}", False
            else:
                node.offers = set(node.facts.get("platforms", []))
        for node in self.nodes.values():
            if node.error:
                self.on_note(f"node {node.short} ({node.address}) left out: {node.error}")
        labels: dict[str, Platform] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            for label in node.facts.get("platforms", []) if node.alive else []:
                labels.setdefault(label, Platform.parse(label))
        if not labels:
            shown = "; ".join(f"{n.short}: {n.error or 'no platform matches'}" for n in self.nodes.values())
            raise HspiError(f"no node of the cluster offers a platform to build ({shown})")
        from hspi_onnx.run.kernels import describe_difference, differences

        self.differences = differences({n.short: n.facts.get("platforms", []) for n in self.nodes.values() if n.alive})
        for d in self.differences:
            self.on_note(f"nodes differ in measured state: {describe_difference(d)}")
        return [(None, p) for p in labels.values()]

    def report(self) -> dict:
        return {"nodes": [n.describe() for n in self.nodes.values()], "nodes_lost": self.lost,
                "cross_checked": self.cross_checked, "differences": self.differences}

    # -- running

    def _offering(self, job: Job) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive and job.label in n.offers and n.id not in job.avoid]

    def _refresh(self, dead: str = "") -> None:
        """Mark the nodes Ray no longer lists alive (and ``dead``, which a task saw die) lost."""
        alive = self._alive_nodes()
        for node in self.nodes.values():
            if node.alive and (node.id not in alive or node.id == dead):
                node.alive = False
                self.lost.append(node.id)
                self.on_note(f"node {node.short} ({node.address}) was lost")

    def stream(self, jobs: list[tuple], model, probes, repeat: int,
               on_event: Callable[[str, dict], None]) -> Iterator[tuple]:
        """(adapter, platform, RunResult or exception) per job as each finishes, its cross-check
        (if a second node offers it) included."""
        from hspi_onnx.run import wire
        from hspi_onnx.run.runner import PlatformCrashed, PlatformFailed

        ray = self.ray
        probes = probes.bind(model)
        described, files = self._ship_model(model)
        frames = {len(probes): ray.put(wire.pack(*probes.to_wire()))}
        samples = {len(probes): probes}

        def first_probes(plat: Platform) -> int:
            """How many probes a cross-check runs: ``cross_check`` rounded up to whole batches of
            the platform (so each meets the batch-mates it met in the main run), at most all."""
            bs = int(plat.knob.get("bs", "1"))
            m = min(len(probes), -(-self.cross_check // bs) * bs)
            if m not in frames:  # a probe set of its own (its own hash: workers keep probe sets by hash)
                from hspi_onnx.inputs.probes import ProbeSet

                first = np.arange(m)
                samples[m] = ProbeSet(probes.name, probes.kind, probes.seed, probes.split, probes.batch(first),
                                      probes.ids[first].copy(), dict(probes.dims))
                frames[m] = ray.put(wire.pack(*samples[m].to_wire()))
            return m

        offered_by = {str(p): sum(1 for n in self.nodes.values() if str(p) in n.offers) for _, p in jobs}
        queue = sorted((Job(a, p, probes=len(probes)) for a, p in jobs), key=lambda j: offered_by[j.label])  # stable
        parts = {job.label: {"left": 1} for job in queue}  # outcomes per label, runs still to come
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

        def submit(job: Job, node: Node) -> None:
            kind = device_kind(job.platform.device)
            wants = {f"{RESOURCE_PREFIX}{r}": 1.0 for r in (job.platform.runtime, kind)
                     if f"{RESOURCE_PREFIX}{r}" in node.resources}
            ref = self._tasks["node_run"].options(num_cpus=0, max_retries=0, resources=wants,
                                                  scheduling_strategy=self._on_node(node.id)).remote(
                described, files, frames[job.probes], job.label, 0 if job.cross else repeat)
            job.node, job.tries = node.id, job.tries + 1
            busy[(node.id, kind)] += 1
            inflight[ref] = job
            if job.cross:
                return
            on_event("start", {"platform": job.label, "n": None, "node": node.id})  # no batch progress from nodes
            second = Job(job.adapter, job.platform, cross=True, avoid={node.id})
            if self.cross_check > 0 and job.tries == 1 and self._offering(second):
                second.probes = first_probes(job.platform)
                parts[job.label]["left"] += 1
                queue.insert(0, second)

        def dispatch() -> None:
            for job in list(queue):
                kind = device_kind(job.platform.device)
                free = [n for n in self._offering(job) if busy[(n.id, kind)] < n.capacity(kind)]
                if free:
                    queue.remove(job)
                    submit(job, min(free, key=lambda n: (busy[(n.id, kind)], n.id)))

        while queue or inflight:
            dispatch()
            if not inflight:  # what is queued has no live node left
                for job in list(queue):
                    queue.remove(job)
                    yield from done(job, None if job.cross else PlatformCrashed(
                        f"no live node offers {job.label}" + (f" (nodes lost: {', '.join(i[:12] for i in self.lost)})"
                                                              if self.lost else "")))
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
            if not ready:
                self._refresh()
                continue
            job = inflight.pop(ready[0])
            busy[(job.node, device_kind(job.platform.device))] -= 1
            try:
                blob = ray.get(ready[0])
            except Exception as exc:  # the node, or its Ray worker, died under the job
                died = type(exc).__name__ in ("NodeDiedError", "TaskUnschedulableError")
                self._refresh(job.node if died else "")
                job.avoid.add(job.node)  # a Ray worker that died may die again there
                where = self.nodes[job.node].short
                if job.tries < MAX_TRIES and self._offering(job):
                    self.on_note(f"{job.label}: lost on node {where} ({type(exc).__name__}); run again elsewhere")
                    queue.insert(0, job)
                    continue
                yield from done(job, None if job.cross else PlatformCrashed(
                    f"{job.label}: lost with node {where} ({type(exc).__name__}), no other live node offers it"))
                continue
            try:
                meta, result = read_result(blob, model, samples[job.probes])
            except HspiError as exc:
                meta, result = {"error": str(exc)}, None
            if job.cross:
                yield from done(job, result)
            else:
                yield from done(job, result if result is not None else PlatformFailed(str(meta["error"])))


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
    record = {"probes": n, "differing": int(differing.sum()),
              "where": f"node {node[:12]}, {cross.host.get('cpu_model', '?')}",
              "nodes": [main.host.get("ray_node"), node]}
    main.cross_check = record
    return record
