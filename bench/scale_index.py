"""Digest index at scale (issue 17, point 4): size on disk and lookup time of a synthetic index
of N rows, in the layout ``hspi_onnx/db/index.py`` stores and searches.

    python bench/scale_index.py [--rows 200000000] [--dir /tmp/scale-index] [--lookups 20000]

20 models x 1,000 platforms x 10,000 probes is 2e8 rows (one output each). The digests are
uniform random 128-bit values (blake2b's are), generated already sorted: the high 64 bits are
sorted as uint64, which orders the big-endian 16-byte strings as the index does. The arrays
(digest S16, platform int32, probe int64, group int32, output int32) are written as ``.npy``
in chunks, then memory-mapped as :func:`hspi_onnx.db.index.load_index` maps them, and
``DigestIndex.lookup`` is timed on digests that are in the index and on digests that are not.
The first pass over cold pages is timed separately from a warm repeat.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from hspi_onnx.db.index import DigestIndex, IndexGroup

CHUNK = 20_000_000


def build(root: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    high = np.sort(rng.integers(0, 2**63, size=rows, dtype=np.int64).view(np.uint64) << np.uint64(1))
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "digest": ("S16", ()),
        "platform": (np.int32, ()),
        "probe": (np.int64, ()),
        "group": (np.int32, ()),
        "output": (np.int32, ()),
    }
    maps = {
        k: np.lib.format.open_memmap(root / f"{k}.npy", mode="w+", dtype=dt, shape=(rows,))
        for k, (dt, _) in arrays.items()
    }
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        n = stop - start
        both = np.empty((n, 2), dtype=">u8")
        both[:, 0] = high[start:stop]
        both[:, 1] = rng.integers(0, 2**63, size=n, dtype=np.int64).view(np.uint64)
        maps["digest"][start:stop] = both.view("S16").reshape(n)
        maps["platform"][start:stop] = rng.integers(0, 1000, size=n, dtype=np.int32)
        maps["probe"][start:stop] = rng.integers(0, 10_000, size=n)
        maps["group"][start:stop] = rng.integers(0, 20, size=n, dtype=np.int32)
        maps["output"][start:stop] = 0
    for m in maps.values():
        m.flush()
    del maps, high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/scale-index"))
    ap.add_argument("--lookups", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    if not (args.dir / "output.npy").is_file():
        build(args.dir, args.rows, args.seed)
    t_build = time.perf_counter() - t0
    arrays = {
        k: np.load(args.dir / f"{k}.npy", mmap_mode="r") for k in ("digest", "platform", "probe", "group", "output")
    }
    rows = len(arrays["digest"])
    size = sum((args.dir / f"{k}.npy").stat().st_size for k in arrays)
    groups = [IndexGroup("m", "m", "p", "p", ["out"], [[1000]], [["float32"]], [], []) for _ in range(20)]
    index = DigestIndex([f"p{i}" for i in range(1000)], groups, **arrays)
    rng = np.random.default_rng(args.seed + 1)
    pick = rng.integers(0, rows, size=args.lookups)
    present = [
        (arrays["digest"][i : i + 1].view(np.uint8).tobytes().hex(), int(arrays["group"][i]), int(arrays["probe"][i]))
        for i in pick
    ]
    absent = [(rng.bytes(16).hex(), 0, 0) for _ in range(args.lookups)]
    results = {}
    for name, keys in (
        ("present, first pass", present),
        ("absent, first pass", absent),
        ("present, warm", present),
        ("absent, warm", absent),
    ):
        t = time.perf_counter()
        hits = sum(1 for d, g, p in keys if index.lookup(g, p, d))
        results[name] = (1e6 * (time.perf_counter() - t) / len(keys), hits)
    print(
        f"rows {rows:,}; index {size / 2**30:.2f} GiB on disk ({size / rows:.0f} bytes per row); "
        f"built in {t_build:.0f} s"
    )
    for name, (us, hits) in results.items():
        print(f"lookup, {name}: {us:.1f} us each ({hits}/{args.lookups} found)")


if __name__ == "__main__":
    main()
