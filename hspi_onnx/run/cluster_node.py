"""What a Ray cluster node does for a distributed build (:mod:`hspi_onnx.run.cluster`): tell
which platforms it offers for a model, run one platform over a probe set, and name its custom
resources.

Ray tasks, defined as plain functions (the driver wraps them with ``ray.remote``): the probe set
arrives as bytes, the model as a reference to its files' bytes that a node fetches only when its
cache does not hold the model yet (written under its sha256 and checked); the platform runs in
the node's long-lived :class:`~hspi_onnx.run.runner.Runner` (a worker process per runtime family, so a crashing runtime
fails its platform, not the node); the run goes back as Arrow IPC bytes
(:mod:`hspi_onnx.run.arrow_runs`), a failure as an error record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hspi_onnx.errors import HspiError

RESOURCE_PREFIX = "hspi:"


def node_resources() -> dict[str, float]:
    """Custom resources for ``ray start --resources`` on this machine: one per available runtime
    family (a job holds one) and per device kind (one CPU job at a time; one per GPU)."""
    from hspi_onnx.host import gpu_names
    from hspi_onnx.run.adapter import registry

    out = {f"{RESOURCE_PREFIX}{name}": 1.0 for name, a in registry().items() if a.available().ok}
    out[f"{RESOURCE_PREFIX}cpu"] = 1.0
    if gpu_names():
        out[f"{RESOURCE_PREFIX}cuda"] = float(len(gpu_names()))
    return out


class ModelMissing(HspiError):
    """The driver asked without the model's bytes and this node's cache does not hold it."""


_RUNNER = None
_MODELS: dict = {}  # sha256 -> ModelInfo, once its files are written and checked in this process
_FETCHED: dict[str, bool] = {}  # sha256 -> whether this process fetched its files (else the cache had them)


def _runner():
    """The node's Runner, kept for the life of this Ray worker process (warm runtime workers)."""
    global _RUNNER
    if _RUNNER is None:
        import atexit

        from hspi_onnx.run.runner import Runner

        _RUNNER = Runner()
        atexit.register(_RUNNER.close)
    return _RUNNER


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refused where it would leave ``root``."""
    target = (root / rel).resolve()
    if root.resolve() not in target.parents:
        raise HspiError(f"model file {rel!r} would land outside the node's cache")
    return target


def _has_model(root: Path, main: str, sizes: dict[str, int], sha: str) -> bool:
    """Whether this node's cache already holds the model: every file at its size, the main file
    hashing to ``sha`` (so a node that built it before fetches nothing)."""
    from hspi_onnx.inputs.onnxfile import sha256_file

    for rel, size in sizes.items():
        target = _inside(root, rel)
        if not target.is_file() or target.stat().st_size != int(size):
            return False
    return sha256_file(root / main) == sha


def _node_model(described: dict, shipment: dict):
    """The model on this node, under the node's cache by sha256: taken from there when a build
    left it, else its files are fetched from the object store (``shipment``: the files' sizes
    and, wrapped in a list so that Ray does not fetch it for every task, the reference to their
    bytes, or an empty list: :class:`ModelMissing`), written, and the main file checked against
    the sha256 the driver read."""
    from hspi_onnx.cache import atomic_write_bytes, cache_dir
    from hspi_onnx.inputs.model import ModelInfo
    from hspi_onnx.inputs.onnxfile import sha256_file

    sha = str(described["sha256"])
    if sha in _MODELS:
        return _MODELS[sha]
    main = Path(described["path"]).name
    root = cache_dir("cluster", sha)
    sizes = {str(rel): int(n) for rel, n in shipment["sizes"].items()}
    _FETCHED[sha] = not _has_model(root, main, sizes, sha)
    if _FETCHED[sha]:
        if not shipment["ref"]:  # asked without the bytes (node_offers says "missing")
            raise ModelMissing(f"model {sha[:12]} is not in this node's cache and was not sent")
        import ray

        for rel, data in ray.get(shipment["ref"][0]).items():  # all of them: the cache did not match
            target = _inside(root, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        if sha256_file(root / main) != sha:
            raise HspiError(f"model bytes received do not hash to {sha[:12]}")
    _MODELS[sha] = ModelInfo.from_wire({**described, "path": str(root / main)})
    return _MODELS[sha]


def node_offers(described: dict, shipment: dict, probe_kind: str, patterns: list[str] | None, extra: bool) -> str:
    """Ray task: what this node offers for the model, as JSON (platform labels, host facts,
    versions, unavailable runtimes)."""
    import ray

    from hspi_onnx import __version__
    from hspi_onnx.errors import UnknownPlatformError
    from hspi_onnx.host import cpu_facts, node_isa_cap
    from hspi_onnx.run.adapter import registry, selected_variants, tool_versions

    doc = {
        "node": ray.get_runtime_context().get_node_id(),
        "hspi": __version__,
        "host": cpu_facts(),
        "pid": os.getpid(),
    }
    try:
        try:
            model = _node_model(described, shipment)
        except ModelMissing:
            return json.dumps(doc | {"model": "missing"})
        doc["model"] = "fetched" if _FETCHED.get(model.sha256) else "cached"
        try:
            chosen = selected_variants(model, probe_kind, patterns, extra)
        except UnknownPlatformError:
            chosen = []
        doc |= {
            "platforms": [str(p) for _, p in chosen],
            "versions": tool_versions(),
            "isa_cap": node_isa_cap(),
            "unavailable": {n: a.available().reason for n, a in registry().items() if not a.available().ok},
        }
    except Exception as exc:  # reported per node; the build goes on with the others
        doc["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
    return json.dumps(doc)


def node_run(described: dict, shipment: dict, probes_frame: bytes, label: str, repeat: int) -> bytes:
    """Ray task: one platform over the probe set on this node, as Arrow IPC bytes (a platform
    that fails or crashes comes back as an error record, not an exception)."""
    import ray

    from hspi_onnx.inputs.probes import ProbeSet, calibration_kind
    from hspi_onnx.run import wire
    from hspi_onnx.run.adapter import Offered
    from hspi_onnx.run.arrow_runs import result_stream
    from hspi_onnx.run.runner import failure_reason

    node = ray.get_runtime_context().get_node_id()
    try:
        model = _node_model(described, shipment)
        probes = ProbeSet.from_wire(*wire.unpack(probes_frame))
        found = Offered(model, calibration_kind(model, probes.kind)).get(label)
        if found is None:
            raise HspiError(f"{label} is not offered on node {node[:12]}")
        result = _runner().run(found[0], model, found[1], probes, repeat=repeat)
    except Exception as exc:
        return result_stream(None, node, failure_reason(exc))
    return result_stream(result, node)
