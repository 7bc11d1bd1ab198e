"""Throughput of `hspi query` against `hspi serve`, next to the bare platform loop.

    python bench/query_throughput.py [-n 256] [--concurrency 1 4 16] [--platform LABEL]

Starts `hspi serve digits -p PLATFORM --port 0` as a subprocess (the port read from its first
line, a bounded wait for /v2/health/ready; the server is always killed at the end), generates
N probes (hspi_onnx.inputs.probes.generate, saved to a temporary directory and loaded back),
then times `hspi query` through its library entry point (hspi_onnx.query.query, in this
process, batch 1, a fresh output file per run) at each concurrency, and the bare platform loop
(hspi_onnx.run.runner.execute, in this process, same probes, same platform). Prints requests
per second, probes per second and the ratio query time / bare-loop time as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform as host_platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import default_kind, generate, load_probes
from hspi_onnx.query import QueryOptions, query
from hspi_onnx.run.adapter import resolve_platform
from hspi_onnx.run.runner import execute
from hspi_onnx.serve.process import ServerProcess

PLATFORM = "onnxruntime/*/fp32/bs=1,opt=all,threads=1"
MODEL = "digits"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=256, help="probes (default 256)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--platform", default=PLATFORM)
    args = ap.parse_args()

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    model = resolve_model(MODEL)
    adapter, plat = resolve_platform(args.platform, model, default_kind(model))
    with tempfile.TemporaryDirectory(prefix="hspi-query-bench-") as tmp:
        probe_file = generate(model, n=args.n).save(Path(tmp) / "probes.npz")
        probes = load_probes(probe_file)

        server = ServerProcess(MODEL, args.platform).wait()
        rows = []
        try:
            print(f"server: {shlex.join(server.argv)} -> {server.url}")
            for c in args.concurrency:
                out = Path(tmp) / f"suspect-c{c}.jsonl"
                opts = QueryOptions(server.url, MODEL, batch=1, concurrency=c, retries=0, timeout=60.0)
                t0 = time.perf_counter()
                summary = query(probes, out, opts)
                seconds = time.perf_counter() - t0
                assert summary.asked == len(probes) and summary.before == 0, summary
                rows.append((f"`hspi query` batch 1, concurrency {c}", summary.requests, len(probes), seconds))
        finally:
            server.stop()

        t0 = time.perf_counter()
        execute(adapter, model, plat, probes)
        bare = time.perf_counter() - t0
        rows.append(("bare platform loop (`runner.execute`, in-process)", None, len(probes), bare))

    print(
        f"\nmodel {MODEL}, platform {plat}, {len(probes)} probes; {os.cpu_count()} CPUs, "
        f"{host_platform.processor() or host_platform.machine()}; query via hspi_onnx.query.query in-process; "
        "bare-loop time includes session creation\n"
    )
    print("| run | requests | probes | seconds | requests/s | probes/s | time / bare loop |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what, requests, n, seconds in rows:
        rps = f"{requests / seconds:.0f}" if requests else "-"
        print(
            f"| {what} | {requests if requests else '-'} | {n} | {seconds:.3f} | {rps} | {n / seconds:.0f} | "
            f"{seconds / bare:.1f}x |"
        )


if __name__ == "__main__":
    main()
