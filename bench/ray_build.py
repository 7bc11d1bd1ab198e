"""The same DB build locally and over a local Ray cluster, on the same machine's cores.

    python bench/ray_build.py [--model resnet] [-n 64] [-p GLOB ...]

Builds, each a fresh `hspi db build` command into an empty DB (start-up, Ray connection and
node discovery included in its wall time), all on this machine's cores:
  local                   the usual build: one platform at a time, a worker process per runtime family
  ray 1 node              a head node with every core, one job at a time: what Ray itself costs
  ray 2 nodes pinned      head + worker node, each pinned to half the cores (sched_setaffinity),
                          as two machines of half the size: one job each at a time, --cross-check 0
  ray 2 nodes pinned, cc  the same with the default cross-check (8 probes again on the other node)
  ray 2 nodes shared      the two nodes not pinned, both on every core: what oversubscription costs
Each Ray DB is compared with the local one, every (platform, probe, output) bit for bit. The
ratio is the build's wall time over the local build's on the same cores (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.run.ray_local import LocalCluster


def rows(db: Path) -> dict:
    con = ReferenceDB(db).connect()
    return {
        (p, i, o): (d, v)
        for p, i, o, d, v in con.execute(
            "SELECT platform, probe_id, output_name, dtype, output FROM outputs"
        ).fetchall()
    }


def timed_build(args: list[str], db: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", "db", "build", *args, "--db", str(db), "-q"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-p", dest="patterns", action="append", default=[])
    a = ap.parse_args()
    base = [a.model, "-n", str(a.n), *[x for p in a.patterns for x in ("-p", p)]]
    work = Path(tempfile.mkdtemp(prefix="hspi-ray-bench-"))
    cores = os.cpu_count()
    subprocess.run([sys.executable, "-m", "hspi_onnx.cli", "models", "export", a.model], capture_output=True)

    results = []
    local = work / "local"
    results.append(("local", timed_build(base, local)))
    want = rows(local)
    platforms = len({k[0] for k in want})

    half = max(1, cores // 2)
    pinned = [set(range(half)), set(range(half, cores)) or {0}]
    for name, layout, cross in (
        ("ray 1 node", [(cores, None)], 0),
        ("ray 2 nodes pinned", [(half, pinned[0]), (half, pinned[1])], 0),
        ("ray 2 nodes pinned, cc", [(half, pinned[0]), (half, pinned[1])], 8),
        ("ray 2 nodes shared", [(half, None), (half, None)], 0),
    ):
        with LocalCluster() as cluster:
            cluster.head(cpus=layout[0][0], cores=layout[0][1])
            for cpus, pin in layout[1:]:
                cluster.worker(cpus=cpus, cores=pin)
            cluster.wait_nodes(len(layout))
            db = work / name.replace(" ", "-").replace(",", "")
            seconds = timed_build([*base, "--ray", cluster.address, "--cross-check", str(cross)], db)
        same = rows(db) == want
        results.append((name, seconds, same))

    print(f"{a.model}, {a.n} probes, {platforms} platforms, {cores} cores")
    print(f"{'build':<24} {'wall s':>8} {'ratio':>7}  bit-identical to local")
    t_local = results[0][1]
    for name, seconds, *same in results:
        print(f"{name:<24} {seconds:8.1f} {seconds / t_local:7.2f}  {'' if not same else ('yes' if same[0] else 'NO')}")


if __name__ == "__main__":
    main()
