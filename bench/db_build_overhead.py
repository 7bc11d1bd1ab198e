"""Wall time of `hspi db build` against a bare loop over the same runtime sessions and probes,
measured side by side in one run, and bytes on disk per stored output value.

    python bench/db_build_overhead.py [--model resnet] [-n 256] [--platforms 'onnxruntime/*/fp32']

The build does more than the bare loop by design: it runs every platform in a worker process
of its runtime family (the default: a crashing runtime fails one platform, not the build),
sends probes and outputs over the worker's pipes, runs each platform a second time on a
16-probe sample (determinism check), computes digests, writes Parquet shards and updates the
manifest. The bare loop runs the same sessions in this process. Both sides share warm caches
(prepared models are built once before timing). ``--in-process`` times the build without
workers too.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hspi_onnx.db.build import build
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import selected_variants
from hspi_onnx.run.runner import Runner, batches


def bare_loop(model, probes, plan) -> float:
    t0 = time.perf_counter()
    for adapter, plat in plan:
        bs = int(plat.knob.get("bs", "1"))
        with adapter.prepare(model, plat) as session:
            for idx in batches(len(probes), bs):
                session.run(probes.batch(idx))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet")
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--platforms", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--in-process", action="store_true", help="also time the build with Runner(in_process=True)")
    args = ap.parse_args()
    model = resolve_model(args.model)
    probes = generate(model, n=args.n)
    plan = selected_variants(model, probes.kind, args.platforms or ["onnxruntime/*/fp32"])
    bare_loop(model, generate(model, n=2), plan)  # warm caches and libraries
    patterns = args.platforms or ["onnxruntime/*/fp32"]
    bare, built, local, sizes, breakdowns = [], [], [], [], {}

    def timed_build(in_process: bool) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            db = ReferenceDB(Path(tmp) / "db", create=True)
            t0 = time.perf_counter()
            with Runner(in_process=in_process) as runner:
                summary = build(db, model, probes, patterns, runner=runner)
                waited = runner.waited_for_workers
            seconds = time.perf_counter() - t0
            assert len(summary.built) == len(plan) and not summary.failed, summary.failed
            sizes.append((sum(p.stat().st_size for p in db.shards()), db.manifest_path.stat().st_size))
        if seconds <= min((local if in_process else built) + [seconds]):  # the best round's breakdown
            breakdowns[in_process] = (seconds, dict(summary.timings, worker_start=waited))
        return seconds

    for r in range(args.rounds):  # alternate, so drift hits every side
        bare.append(bare_loop(model, probes, plan))
        built.append(timed_build(False))
        if args.in_process:
            local.append(timed_build(True))
    width = sum(int(np.prod(o.shape)) for o in model.outputs)
    values = args.n * len(plan) * width
    shard_bytes, manifest_bytes = sizes[-1]
    print(f"model {model.name}, {len(plan)} platforms, {args.n} probes, {args.rounds} rounds")
    print(f"bare loop (in this process)      : {min(bare):.2f} s (best of {args.rounds})")
    print(f"hspi db build (worker processes) : {min(built):.2f} s (best of {args.rounds})")
    if local:
        print(f"hspi db build (--in-process)     : {min(local):.2f} s (best of {args.rounds})")
    print(
        f"ratio build / bare: {min(built) / min(bare):.2f}"
        + (f" (in-process build: {min(local) / min(bare):.2f})" if local else "")
    )
    print(
        f"bytes on disk per output value: {shard_bytes / values:.2f} in shards "
        f"(+{manifest_bytes / values:.2f} manifest) vs 4.00 raw float32"
    )
    for in_process, (total, t) in sorted(breakdowns.items()):
        rest = t["run"] - t["compute"] - t["prepare"] - t["checks"] - t["worker_start"]
        print(f"where the {'in-process' if in_process else 'worker'} build's {total:.2f} s went:")
        for name, value in [
            ("batches (what the bare loop runs)", t["compute"]),
            ("prepare (sessions, measured state)", t["prepare"]),
            ("determinism checks (repeat sample, batch of copies)", t["checks"]),
            ("waiting for worker processes to start", t["worker_start"]),
            ("pipes, probe and output transfer, progress", rest),
            ("digests and the Arrow table", t["digests"]),
            ("Parquet write, fsync, rename", t["write"]),
            ("manifest updates", t["manifest"]),
            ("planning, listing variants, the rest", total - t["run"] - t["digests"] - t["write"] - t["manifest"]),
        ]:
            print(f"  {name:<55} {value:6.2f} s  {100 * value / total:5.1f} %")


if __name__ == "__main__":
    main()
