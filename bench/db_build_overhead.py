"""Wall time of `hspi db build` against a bare loop over the same runtime sessions and probes,
measured side by side in one run, and bytes on disk per stored output value.

    python bench/db_build_overhead.py [--model resnet] [-n 256] [--platforms 'onnxruntime/*/fp32']

The build does more than the bare loop by design: it runs each platform a second time on a
16-probe sample (determinism check), computes digests, writes Parquet shards and updates the
manifest. Both sides share warm caches (prepared models are built once before timing).
"""

import argparse
import tempfile
import time
from pathlib import Path

from hspi_onnx.run.adapter import selected_variants
from hspi_onnx.db.build import build
from hspi_onnx.run.execute import batches
from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import generate
from hspi_onnx.db.store import ReferenceDB


def bare_loop(model, probes, plan) -> float:
    t0 = time.perf_counter()
    for adapter, plat in plan:
        bs = int(plat.knob.get("bs", "1"))
        with adapter.prepare(model, plat) as session:
            for idx in batches(len(probes), bs):
                session.run(probes.inputs[idx])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet")
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--platforms", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = resolve_model(args.model)
    probes = generate(model.spec, n=args.n)
    plan = selected_variants(model, probes.kind, args.platforms or ["onnxruntime/*/fp32"])
    bare_loop(model, generate(model.spec, n=2), plan)  # warm caches and libraries
    bare, built, sizes = [], [], []
    for r in range(args.rounds):  # alternate, so drift hits both sides
        bare.append(bare_loop(model, probes, plan))
        with tempfile.TemporaryDirectory() as tmp:
            db = ReferenceDB(Path(tmp) / "db", create=True)
            t0 = time.perf_counter()
            build(db, model, probes, args.platforms or ["onnxruntime/*/fp32"])
            built.append(time.perf_counter() - t0)
            shards = db.shards()
            sizes.append((sum(p.stat().st_size for p in shards), db.manifest_path.stat().st_size))
    values = args.n * len(plan) * 10 if model.name != "lm" else args.n * len(plan) * 256
    shard_bytes, manifest_bytes = sizes[-1]
    print(f"model {model.name}, {len(plan)} platforms, {args.n} probes, {args.rounds} rounds")
    print(f"bare loop   : {min(bare):.2f} s (best of {args.rounds})")
    print(f"hspi db build: {min(built):.2f} s (best of {args.rounds})")
    print(f"ratio build / bare: {min(built) / min(bare):.2f}")
    print(f"bytes on disk per output value: {shard_bytes / values:.2f} in shards "
          f"(+{manifest_bytes / values:.2f} manifest) vs 4.00 raw float32")


if __name__ == "__main__":
    main()
