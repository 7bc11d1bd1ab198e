"""Distributed builds on a Ray cluster: ``hspi db build MODEL --db DB --ray ADDRESS``.

The driver (this process) connects to the cluster and asks every node which platforms it
offers for the model (:func:`hspi_onnx.run.cluster_node.node_offers`): each node enumerates its
own variants, so its labels carry its device and ISA, and a node started without a runtime
(``HSPI_RUNTIMES``) or under an instruction-set cap (``HSPI_ISA_CAP``) offers what it really
runs. Nodes are asked first without the model's bytes: only if some node's cache lacks the model
(from an earlier build) do its files go into the object store, once, and only such a node
fetches them (``model`` per node in the JSON report: cached or fetched; ``model_sent``). Each
platform then goes to a node that offers it (those few nodes offer first), pulled as nodes free
up: at most one job per node and device kind at a time, or as many as the node's
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.labels import Platform
from hspi_onnx.run.arrow_runs import read_result
from hspi_onnx.run.cluster_node import RESOURCE_PREFIX, node_offers, node_run
from hspi_onnx.run.schedule import MAX_TRIES, POLL_S, Job, Lost, Scheduler, device_kind

CROSS_CHECK_PROBES = 8  # one batch of the largest default batch size
DISCOVERY_TIMEOUT_S = 300.0
CLIENT_TRIES = 3  # a Ray client server sometimes fails to start a client's session (seen once in a fresh clone)


def import_ray():
    try:
        import ray
    except ImportError:
        raise HspiError("--ray needs Ray: pip install 'hspi-onnx[ray]'") from None
    return ray


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

    def as_dict(self) -> dict:
        return {
            "node": self.id,
            "address": self.address,
            "alive": self.alive,
            "platforms": len(self.offers),
            "isa": self.facts.get("host", {}).get("isa"),
            "isa_cap": self.facts.get("isa_cap"),
            "cpu": self.facts.get("host", {}).get("cpu_model"),
            "hspi": self.facts.get("hspi"),
            "model": self.facts.get("model"),  # fetched from the object store, or cached on the node
            "unavailable": self.facts.get("unavailable", {}),
            "custom_resources": sorted(k for k in self.resources if k.startswith(RESOURCE_PREFIX)),
            **({"error": self.error} if self.error else {}),
        }


class RayRunner:
    """Runs a build's platforms over a Ray cluster (``address``: ``HOST:PORT``, ``ray://...`` or
    ``auto``): the runner contract (:mod:`hspi_onnx.run.contract`) and the scheduler's backend
    (:mod:`hspi_onnx.run.schedule`); :meth:`plan` asks the nodes what they offer, :meth:`stream`
    runs the jobs."""

    def __init__(
        self, address: str, cross_check: int = CROSS_CHECK_PROBES, on_note: Callable[[str], None] = lambda line: None
    ) -> None:
        self.ray = import_ray()
        self.cross_check, self.on_note = int(cross_check), on_note
        self.nodes: dict[str, Node] = {}
        self.lost: list[str] = []
        self.cross_checked: dict[str, dict] = {}
        self.differences: list[dict] = []  # measured state the nodes differ in (run/kernels.differences)
        self._model_ref: tuple[str, dict] | None = None  # (model sha256, its shipment: sizes and object ref)
        self._streaming: dict = {}  # the probes, model and frames of the stream being run
        _reachable(address)
        for attempt in range(CLIENT_TRIES if address.startswith("ray://") else 1):
            try:
                self.ray.init(address=address, logging_level="ERROR", log_to_driver=False, namespace="hspi-onnx")
                break
            except ConnectionAbortedError:  # the client server's per-client server failed to start
                if attempt + 1 == CLIENT_TRIES:
                    raise HspiError(
                        f"cannot join the Ray cluster at {address!r}: its client server failed to "
                        f"start a session {CLIENT_TRIES} times"
                    ) from None
                self.ray.shutdown()
                time.sleep(2.0)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise HspiError(
                    f"cannot join the Ray cluster at {address!r}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None
        self._tasks = {fn.__name__: self.ray.remote(fn) for fn in (node_offers, node_run)}

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayRunner:
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

    def _ship_model(self, model, put: bool = True) -> tuple[dict, dict]:
        """The model for the nodes: its description, and its files' sizes with (``put``) a
        reference to their bytes in the object store, put once per model; without it, a node
        whose cache lacks the model says so instead of fetching."""
        from hspi_onnx.inputs.onnxfile import external_data_files

        if self._model_ref is None or self._model_ref[0] != model.sha256 or (put and not self._model_ref[1]["ref"]):
            paths = {model.path.name: model.path}
            for rel in external_data_files(model.path):
                paths[rel] = model.path.parent / rel
            if model.weights_path().is_file():  # a zoo module's weights (pytorch src=module)
                paths[model.weights_path().name] = model.weights_path()
            shipment: dict = {"sizes": {rel: path.stat().st_size for rel, path in paths.items()}, "ref": []}
            if put:
                files = {rel: path.read_bytes() for rel, path in paths.items()}
                try:
                    shipment["ref"].append(self.ray.put(files))
                except Exception as exc:  # ObjectStoreFullError, OutOfDiskError: the driver node's store
                    raise HspiError(
                        f"the Ray object store of the driver's node cannot take the model's "
                        f"{sum(map(len, files.values())) / 1e6:.0f} MB ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); give the node more object store memory "
                        f"(ray start --object-store-memory) or free disk space for spilling"
                    ) from None
                del files
            self._model_ref = (model.sha256, shipment)
        return model.to_wire(), self._model_ref[1]

    def _ask(self, node_ids: list[str], model, kind: str, patterns: list[str] | None, extra: bool, put: bool) -> None:
        """Each node's offer for the model (its facts, or why it is left out)."""
        from hspi_onnx import __version__

        described, shipment = self._ship_model(model, put)
        asked = {
            self._tasks["node_offers"]
            .options(num_cpus=0, max_retries=0, scheduling_strategy=self._on_node(node_id))
            .remote(described, shipment, kind, patterns, extra): node_id
            for node_id in node_ids
        }
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
            if node.facts.get("error"):
                node.error, node.alive = node.facts["error"], False
            elif node.facts.get("hspi") != __version__:
                node.error, node.alive = f"runs hspi-onnx {node.facts.get('hspi')}, the driver {__version__}", False
            else:
                node.offers = set(node.facts.get("platforms", []))

    def plan(self, model, probes, patterns: list[str] | None, extra: bool) -> list[tuple[None, Platform]]:
        """Every platform some node offers (matching ``patterns``), after asking each node: first
        without the model's bytes, then, only if some node's cache lacks the model, with them."""
        from hspi_onnx.inputs.probes import calibration_kind

        kind = calibration_kind(model, probes.bind(model).kind)
        for node_id, info in self._alive_nodes().items():
            self.nodes[node_id] = Node(
                node_id, str(info.get("NodeManagerAddress", "")), dict(info.get("Resources", {}))
            )
        if not self.nodes:
            raise HspiError("the Ray cluster has no live node")
        self._ask(list(self.nodes), model, kind, patterns, extra, put=False)
        lacking = [n.id for n in self.nodes.values() if n.alive and n.facts.get("model") == "missing"]
        if lacking:
            self._ask(lacking, model, kind, patterns, extra, put=True)
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
        return {
            "nodes": [n.as_dict() for n in self.nodes.values()],
            "nodes_lost": self.lost,
            "cross_checked": self.cross_checked,
            "differences": self.differences,
            "model_sent": bool(self._model_ref and self._model_ref[1]["ref"]),  # its bytes put in the object store
        }

    # -- running

    def refresh(self, dead: str = "") -> None:
        """Mark the nodes Ray no longer lists alive (and ``dead``, which a task saw die) lost."""
        alive = self._alive_nodes()
        for node in self.nodes.values():
            if node.alive and (node.id not in alive or node.id == dead):
                node.alive = False
                self.lost.append(node.id)
                self.on_note(f"node {node.short} ({node.address}) was lost")

    def note(self, line: str) -> None:
        self.on_note(line)

    # the scheduler's backend (:class:`hspi_onnx.run.schedule.Backend`): one stream's probes and model

    def submit(self, job: Job, node: Node, repeat: int):
        from hspi_onnx.run import wire

        st = self._streaming
        if job.probes not in st["frames"]:  # a cross-check's first probes: a probe set of its own hash
            from hspi_onnx.inputs.probes import ProbeSet

            probes, first = st["probes"], np.arange(job.probes)
            st["samples"][job.probes] = ProbeSet(
                probes.name,
                probes.kind,
                probes.seed,
                probes.split,
                probes.batch(first),
                probes.ids[first].copy(),
                dict(probes.dims),
            )
            st["frames"][job.probes] = self.ray.put(wire.pack(*st["samples"][job.probes].to_wire()))
        kind = device_kind(job.platform.device)
        wants = {
            f"{RESOURCE_PREFIX}{r}": 1.0
            for r in (job.platform.runtime, kind)
            if f"{RESOURCE_PREFIX}{r}" in node.resources
        }
        return (
            self._tasks["node_run"]
            .options(num_cpus=0, max_retries=0, resources=wants, scheduling_strategy=self._on_node(node.id))
            .remote(st["described"], st["shipment"], st["frames"][job.probes], job.label, repeat)
        )

    def wait(self, handles: list, timeout: float):
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def result(self, handle, job: Job):
        from hspi_onnx.run.runner import PlatformFailed

        try:
            blob = self.ray.get(handle)
        except Exception as exc:  # the node, or its Ray worker, died under the job
            raise Lost(type(exc).__name__, type(exc).__name__ in ("NodeDiedError", "TaskUnschedulableError"))
        try:
            meta, result = read_result(blob, self._streaming["model"], self._streaming["samples"][job.probes])
        except HspiError as exc:
            meta, result = {"error": str(exc)}, None
        return result if result is not None else PlatformFailed(str(meta["error"]))

    def stream(
        self, jobs: list[tuple], model, probes, repeat: int, on_event: Callable[[str, dict], None]
    ) -> Iterator[tuple]:
        """(adapter, platform, RunResult or exception) per job as each finishes, its cross-check
        (if a second node offers it) included: :class:`hspi_onnx.run.schedule.Scheduler` over
        this cluster's nodes."""
        from hspi_onnx.run import wire

        probes = probes.bind(model)
        planned = self._model_ref is not None and self._model_ref[0] == model.sha256
        described, shipment = self._ship_model(model, put=not planned)  # as plan left it: sent if a node lacked it
        self._streaming = {
            "model": model,
            "probes": probes,
            "described": described,
            "shipment": shipment,
            "frames": {len(probes): self.ray.put(wire.pack(*probes.to_wire()))},
            "samples": {len(probes): probes},
        }
        scheduler = Scheduler(self, self.cross_check, MAX_TRIES, POLL_S)
        try:
            yield from scheduler.stream(jobs, len(probes), repeat, on_event)
        finally:
            self.cross_checked.update(scheduler.cross_checked)
            self._streaming = {}
