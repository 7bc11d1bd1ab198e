"""``hspi db build``: run every selected platform over a probe set into shards.

Resumable (finished shards are skipped), crash-safe (manifest entries are written before the
shards they describe; shards are renamed into place), determinism-checked (the batches holding
the first 16 probes run a second time in the same session, with the same batch composition;
`hspi survey` checks repeatability across fresh processes) and failure-isolated (a platform
that fails is recorded with its reason and the build goes on).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hspi_onnx.db.manifest import Manifest, ModelEntry, PlatformEntry, PlatformNote, ProbeSetEntry, RunEntry
from hspi_onnx.db.store import COLUMNS, ReferenceDB, arrow_schema
from hspi_onnx.host import cpu_facts
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.inputs.probes import ProbeSet, calibration_kind
from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult, dtype_name, to_storage
from hspi_onnx.run.adapter import selected_variants, tool_versions
from hspi_onnx.run.contract import PlatformRunner
from hspi_onnx.run.runner import Runner, failure_reason

REPEAT_SAMPLE = 16
# a language model's probe is a whole generation (prefill plus a decode step per token): one is
# re-run, which on the 8 built-in chats is 1/8 more compute instead of all of it again
GENERATION_REPEAT_SAMPLE = 1


@dataclass
class BuildSummary:
    run_id: str
    planned: int = 0
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    nondeterministic: list[str] = field(default_factory=list)
    batch_dependent: list[str] = field(default_factory=list)  # a probe's output depends on its batch-mates
    # seconds by phase (bench/db_build_overhead.py): "run" (waiting for the runner), of which "compute"
    # (the batches), "prepare" and "checks" (repeat sample, batch of copies); then "digests" (hashing
    # and the Arrow table), "write" (Parquet, fsync, rename), "manifest" (updates under the lock)
    # where this build's platforms differ in measured state from the same runtimes' earlier runs
    # of this model in the DB (run/kernels.differences): different labels, so they never mix
    differences: list = field(default_factory=list)
    timings: dict = field(
        default_factory=lambda: dict.fromkeys(
            ("run", "compute", "prepare", "checks", "digests", "write", "manifest"), 0.0
        )
    )

    @property
    def partial(self) -> bool:
        return bool(self.failed)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "planned": self.planned,
            "built": self.built,
            "skipped": self.skipped,
            "failed": self.failed,
            "nondeterministic": self.nondeterministic,
            "batch_dependent": self.batch_dependent,
            "partial": self.partial,
            "differences": self.differences,
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def shard_table(result: RunResult, platform: Platform, run_id: str, deterministic: bool):
    """One row per (output, probe), outputs in the model's order, probes in the run's order."""
    import pyarrow as pa

    n = len(result.ids)
    host = json.dumps(result.host, sort_keys=True)
    cols: dict[str, list] = {c: [] for c, _ in COLUMNS}
    fixed = {
        "model_sha256": result.model_sha256,
        "model_name": result.model_name,
        "probes_sha256": result.probes_sha256,
        "probes_name": result.probes_name,
        "platform": str(platform),
        "runtime": platform.runtime,
        "runtime_version": platform.version,
        "device": platform.device,
        "precision": platform.precision,
        "knobs": platform.knob_string(),
        "run_id": run_id,
        "deterministic": deterministic,
        "host": host,
    }
    digests = result.digests()
    for name, values in result.outputs.items():
        for k, v in fixed.items():
            cols[k] += [v] * n
        cols["probe_id"] += [int(i) for i in result.ids]
        cols["output_name"] += [name] * n
        cols["dtype"] += [dtype_name(values)] * n
        cols["shape"] += [list(values.shape[1:])] * n
        cols["output"] += [row.tobytes() for row in to_storage(values)]
        cols["digest"] += [bytes.fromhex(d) for d in digests[name]]
    return pa.Table.from_pydict(cols, schema=arrow_schema())


def _state_differences(db: ReferenceDB, model: ModelInfo, plan: list[tuple]) -> list[dict]:
    """Measured-state differences between the plan and the DB's platforms of the same model."""
    from hspi_onnx.run.kernels import differences

    try:
        manifest = db.manifest()
    except Exception:  # a new or unreadable DB: the build itself says what is wrong
        return []
    earlier = {label for r in manifest.runs.values() if r.model_sha256 == model.sha256 for label in r.platforms}
    # only labels of one setting are compared (kernels.differences), so other runtimes never pair
    return differences({"DB": sorted(earlier), "this build": sorted(str(p) for _, p in plan)}) if earlier else []


def build(
    db: ReferenceDB,
    model: ModelInfo,
    probes: ProbeSet,
    patterns: list[str] | None,
    on_event: Callable[[str, dict], None] = lambda kind, data: None,
    repeat_sample: int = REPEAT_SAMPLE,
    extra: bool = False,
    runner: PlatformRunner | None = None,
    plan: list[tuple] | None = None,
) -> BuildSummary:
    """Every selected platform of ``model`` over ``probes`` into ``db``, each in a worker
    process of its runtime family (``runner``: one to share, e.g. in-process; default: a new one).
    ``plan``, with a runner that can run it (e.g. :class:`hspi_onnx.query.remote.RemoteRunner`),
    replaces the local platforms that ``patterns`` select: (adapter or None, platform) pairs."""
    if runner is None:
        with Runner() as own:
            return build(db, model, probes, patterns, on_event, repeat_sample, extra, own, plan)
    db.require_writable()
    probes = probes.bind(model)
    if model.generation is not None:
        repeat_sample = min(repeat_sample, GENERATION_REPEAT_SAMPLE)
    if plan is None:
        plan = selected_variants(model, calibration_kind(model, probes.kind), patterns, extra)
    todo = [(a, p) for a, p in plan if not db.existing_shards(model.sha256, probes.sha256, str(p))]
    summary_differences = _state_differences(db, model, plan)
    pending = {str(p) for _, p in todo}
    if todo:
        runner.prestart(*todo[0])  # its start-up overlaps with registering the run
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    summary = BuildSummary(run_id, planned=len(plan), differences=summary_differences)
    from hspi_onnx.run.kernels import describe_difference

    for d in summary.differences:
        on_event(
            "note", {"line": "this build and the DB's earlier runs differ in measured state: " + describe_difference(d)}
        )
    db.clean_stale_temporaries()

    def register(m: Manifest) -> None:
        if model.sha256 not in m.models:
            m.models[model.sha256] = ModelEntry.from_dict(model.describe())
        if probes.sha256 not in m.probe_sets:
            m.probe_sets[probes.sha256] = ProbeSetEntry.from_dict(probes.meta())
        for _, p in plan:
            if str(p) not in m.platforms:
                m.platforms[str(p)] = PlatformEntry.from_dict(p.as_dict())
        m.runs[run_id] = RunEntry(
            started=_now(),
            finished=None,
            host=cpu_facts(),
            versions=tool_versions(),
            argv=sys.argv[1:],
            pid=os.getpid(),
            model_sha256=model.sha256,
            probes_sha256=probes.sha256,
            platforms=[str(p) for _, p in plan],
        )

    def entry(label: str, reason: str, at: str | None = None) -> PlatformNote:
        return PlatformNote(run_id, model.sha256, probes.sha256, label, reason, at)

    timings = summary.timings

    def update(change) -> None:
        t0 = time.perf_counter()
        db.update(change)
        timings["manifest"] += time.perf_counter() - t0

    update(register)
    on_event("plan", {"total": len(plan)})
    for _, plat in plan:
        if str(plat) not in pending:
            summary.skipped.append(str(plat))
            on_event("skipped", {"platform": str(plat)})
    t_wait = time.perf_counter()
    for adapter, plat, outcome in runner.stream(todo, model, probes, repeat_sample, on_event):
        timings["run"] += time.perf_counter() - t_wait
        label = str(plat)
        if isinstance(outcome, BaseException):  # failure isolation: record and go on
            reason = failure_reason(outcome)
            summary.failed[label] = reason
            update(lambda m: m.failures.append(entry(label, reason, at=_now())))
            on_event("failed", {"platform": label, "reason": reason})
            t_wait = time.perf_counter()
            continue
        result = outcome
        deterministic = bool(result.repeats)
        timings["compute"] += result.seconds
        for phase in ("prepare", "checks"):
            timings[phase] += float(result.phases.get(phase, 0.0))
        t0 = time.perf_counter()
        table = shard_table(result, plat, run_id, deterministic)
        t1 = time.perf_counter()
        db.write_shard(db.shard_path(model.sha256, probes.sha256, label, run_id), table)
        timings["digests"] += t1 - t0
        timings["write"] += time.perf_counter() - t1
        summary.built.append(label)
        if not deterministic:
            summary.nondeterministic.append(label)
            update(lambda m: m.nondeterministic.append(entry(label, "second run differed on the repeat sample")))
        cross = result.cross_check
        if cross and cross["differing"]:
            if deterministic:
                summary.nondeterministic.append(label)
            update(
                lambda m: m.nondeterministic.append(
                    entry(
                        label,
                        f"another machine ({cross['where']}) gave other bits on {cross['differing']} of the first "
                        f"{cross['probes']} probes",
                    )
                )
            )
        if result.batch_independent is False:
            summary.batch_dependent.append(label)
            update(
                lambda m: m.batch_dependent_list().append(
                    entry(label, "the first probe alone in its batch (padded with copies) gave other bits")
                )
            )
        on_event("built", {"platform": label, "deterministic": deterministic})
        t_wait = time.perf_counter()

    def finish(m: Manifest) -> None:
        run = m.runs[run_id]
        run.finished = _now()
        run.built, run.skipped, run.failed = len(summary.built), len(summary.skipped), len(summary.failed)

    update(finish)
    return summary
