"""Wall time of `hspi train` on K platforms x N probes, the classifier issue's budget (<= 60 s for
30 platforms x 1,000 probes on 2 cores).

    python bench/train_time.py --db DB [--platforms 30] [--rows-per-platform 250 --rows-per-platform 1000]

Picks K platforms at random from the DB's largest (model, probe set) group, copies their shards
into a temporary DB and times the whole `hspi train` command (features, every target, saving) in a
fresh process for each --rows-per-platform setting, printing one line each.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, type=Path)
    ap.add_argument("--platforms", type=int, default=30)
    ap.add_argument("--rows-per-platform", type=int, action="append", default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    groups = defaultdict(list)
    for p in (args.db / "shards").glob("*/*/*.parquet"):
        groups[p.parent].append(p)
    folder, shards = max(groups.items(), key=lambda kv: len(kv[1]))
    random.seed(args.seed)
    chosen = random.sample(sorted(shards), min(args.platforms, len(shards)))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        target = db / folder.relative_to(args.db)
        target.mkdir(parents=True)
        shutil.copy(args.db / "manifest.json", db / "manifest.json")
        for p in chosen:
            shutil.copy(p, target / p.name)
        for rows in args.rows_per_platform or [250]:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hspi_onnx.cli",
                    "train",
                    "--db",
                    str(db),
                    "-o",
                    str(Path(tmp) / f"clf{rows}"),
                    "--rows-per-platform",
                    str(rows),
                    "--json",
                    "-q",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - t0
            r = json.loads(proc.stdout)
            print(
                f"{len(chosen)} platforms x {r['rows'] // len(chosen)} probes, {rows} training rows per platform: "
                f"hspi train {wall:.1f} s wall (features {r['feature_seconds']} s, "
                f"targets {sum(r['train_seconds'].values()):.1f} s: "
                + ", ".join(f"{t} {s}" for t, s in r["train_seconds"].items())
                + ")"
            )


if __name__ == "__main__":
    main()
