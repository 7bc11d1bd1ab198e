"""``hspi db merge``: the union of reference DBs built on different machines.

Shards are copied (never overwritten: their names carry the run id), manifests are merged
(models, probe sets, platforms and runs by key; failures and non-repeatable entries
concatenated). When one platform label has several runs whose outputs differ on some probe,
the platform is recorded as non-deterministic with the runs and the number of probes that
differ; both shards stay. Where the sources were built on machines whose measured state differs
(a BLAS kernel, an ISA limit, the device), the report says so: those platforms carry different
labels and do not meet.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from hspi_onnx.db.manifest import Manifest, PlatformNote
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError


def _merge_manifest(dst: Manifest, src: Manifest) -> None:
    for key, model in src.models.items():
        dst.models.setdefault(key, model)
    for key, probe_set in src.probe_sets.items():
        dst.probe_sets.setdefault(key, probe_set)
    for key, platform in src.platforms.items():
        dst.platforms.setdefault(key, platform)
    for key, run in src.runs.items():
        dst.runs.setdefault(key, run)
    _add_new(dst.failures, src.failures)
    _add_new(dst.nondeterministic, src.nondeterministic)
    if src.batch_dependent:  # absent from older DBs; created in the target by the first entry
        _add_new(dst.batch_dependent_list(), src.batch_dependent)


def _add_new(dst: list[PlatformNote], src: list[PlatformNote]) -> None:
    for entry in src:
        if entry not in dst:
            dst.append(entry)


def merge(sources: list[Path], target: Path) -> dict:
    srcs = [ReferenceDB(s) for s in sources]
    out = ReferenceDB(target, create=True)
    out.require_writable()
    for src in srcs:
        if src.schema != out.schema:
            raise HspiError(f"{str(src.root)!r} is schema {src.schema}; run `hspi db upgrade --db {src.root}` first")
    if any(Path(s.root).resolve() == Path(out.root).resolve() for s in srcs):
        raise HspiError("the merge target must not be one of the sources")
    copied = identical = 0
    for src in srcs:
        manifest = src.manifest()
        out.update(lambda m: _merge_manifest(m, manifest))  # describe before copying, as a build does
        for shard in src.shards():
            dest = out.root / shard.relative_to(src.root)
            if dest.exists():
                if not filecmp.cmp(shard, dest, shallow=False):
                    raise HspiError(f"shard {dest.relative_to(out.root)} exists with other contents")
                identical += 1
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(shard, tmp)
            os.replace(tmp, dest)
            copied += 1
    conflicts = find_conflicts(out)

    def record(m: Manifest) -> None:
        _add_new(
            m.nondeterministic,
            [
                PlatformNote(
                    run_id=",".join(c["runs"]),
                    model_sha256=c["model_sha256"],
                    probes_sha256=c["probes_sha256"],
                    platform=c["platform"],
                    reason=f"merge: runs {', '.join(c['runs'])} differ on {c['probes_differing']} probes",
                )
                for c in conflicts
            ],
        )

    out.update(record)
    from hspi_onnx.run.kernels import differences

    labels = {str(s.root): list(s.manifest().platforms) for s in srcs}
    return {
        "target": str(out.root),
        "sources": [str(s.root) for s in srcs],
        "shards_copied": copied,
        "shards_identical": identical,
        "conflicts": conflicts,
        "differences": differences(labels),
    }


def find_conflicts(db: ReferenceDB) -> list[dict]:
    """Labels with several runs whose outputs differ on at least one probe."""
    con = db.connect()
    rows = con.execute("""
        WITH per_probe AS (
            SELECT model_sha256, probes_sha256, platform, probe_id, output_name,
                   count(DISTINCT digest) AS variants, list(DISTINCT run_id ORDER BY run_id) AS runs
            FROM outputs GROUP BY ALL)
        SELECT model_sha256, probes_sha256, platform, count(*) FILTER (WHERE variants > 1) AS differing,
               flatten(list(runs)) AS runs
        FROM per_probe GROUP BY ALL HAVING differing > 0 ORDER BY platform""").fetchall()
    return [
        {"model_sha256": m, "probes_sha256": p, "platform": plat, "probes_differing": int(d), "runs": sorted(set(runs))}
        for m, p, plat, d, runs in rows
    ]
