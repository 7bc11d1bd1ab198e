"""Coverage of the default CPU matrix on the test corpus (tests/corpus.py): every corpus model
exported and built with `hspi db build` over every available platform, as a markdown table.

    python bench/corpus_coverage.py [OUTDIR] [-n 16] [--model NAME ...]

OUTDIR holds NAME.onnx and db-NAME/ per model (default: a temporary folder, removed after).
Failures are grouped by runtime, precision, the knobs other than batch size and threads, and
reason; each group is matched against KNOWN, the failures whose cause is established
(docs/corpus.md). Exit status 1 when a failure is unexplained, so the table doubles as a check.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import corpus  # noqa: E402  (tests/corpus.py: the corpus lives with the tests)

# (model, regex over "LABEL REASON", cause): failures explained in docs/corpus.md
KNOWN = [
    (
        "vit",
        r"^onnxruntime@\S+/fp16/\S*opt=all.*SIGSEGV",
        "ORT bug microsoft/onnxruntime#28392: after ORT wraps the fp16 MatMul in Casts, MatmulTransposeFusion "
        "swaps Transpose->Cast into nodes without a schema and NchwcTransformer dereferences it",
    ),
    (
        "gru",
        r"^openvino@.*GatherElements node '/GatherElements'",
        "OpenVINO bug: its EliminateSliceBeforeGatherElements pass drops the Slice (axis 2) feeding "
        "GatherElements (axis 1) without checking the axes",
    ),
]
SPLIT_KNOBS = ("bs", "threads")  # knobs a failure group spans rather than names


def build_command(path: Path, db: Path, n: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hspi_onnx.cli",
        "db",
        "build",
        str(path),
        "--db",
        str(db),
        "-n",
        str(n),
        "-q",
        "--json",
    ]


def io_summary(path: Path) -> tuple[str, str]:
    """("name: dtype, ..." of the inputs, "name, ..." of the outputs)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [
        f"{i.name}: {helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)}"
        for i in graph.input
        if i.name not in inits
    ]
    return ", ".join(inputs), ", ".join(o.name for o in graph.output)


def group_failures(model: str, failed: dict[str, str]) -> list[tuple[int, str, str]]:
    """[(count, "runtime precision knobs: reason", cause or "")] for ``failed`` (label -> reason)."""
    from hspi_onnx.labels import Platform

    groups: Counter = Counter()
    causes: dict[str, str] = {}
    for label, reason in failed.items():
        plat = Platform.parse(label)
        knobs = ",".join(f"{k}={v}" for k, v in sorted(plat.knob.items()) if k not in SPLIT_KNOBS)
        text = reason.replace(f" for {label}", "").replace(label, "<platform>")
        key = f"{plat.runtime} {plat.precision}{' ' + knobs if knobs else ''}: {text}"
        groups[key] += 1
        causes[key] = next(
            (cause for m, pattern, cause in KNOWN if m == model and re.search(pattern, f"{label} {reason}")), ""
        )
    return [(count, key, causes[key]) for key, count in sorted(groups.items())]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def run(outdir: Path, names: list[str], n: int) -> int:
    print(f"command per model: python {' '.join(build_command(Path('NAME.onnx'), Path('db-NAME'), n)[1:])}")
    print(f"(python {' '.join(sys.argv)}; one worker process per runtime family)\n")
    print("| model | inputs | outputs | platforms | built | failed | wall s |")
    print("|---|---|---|---|---|---|---|")
    notes, unexplained = [], 0
    for name in names:
        path = corpus.export(name, outdir)
        t0 = time.perf_counter()
        proc = subprocess.run(build_command(path, outdir / f"db-{name}", n), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 3):  # 3: partial (some platforms failed)
            print(f"| {name} | build failed (exit {proc.returncode}): {cell(proc.stderr.strip()[-300:])} |||||")
            unexplained += 1
            continue
        report = json.loads(proc.stdout)
        inputs, outputs = io_summary(path)
        print(
            f"| {name} | {cell(inputs)} | {cell(outputs)} | {report['planned']} | "
            f"{len(report['built']) + len(report['skipped'])} | {len(report['failed'])} | {wall:.0f} |"
        )
        for count, key, cause in group_failures(name, report["failed"]):
            unexplained += count if not cause else 0
            notes.append(f"- {name}: {count} x {cell(key)} — {cause or '**UNEXPLAINED**'}")
    print("\nFailures:\n" if notes else "\nNo failures.")
    print("\n".join(notes))
    return 1 if unexplained else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", type=Path, help="folder for the exports and DBs (default: temporary)")
    ap.add_argument("-n", type=int, default=16, help="probes per model")
    ap.add_argument("--model", action="append", choices=list(corpus.CORPUS), help="only these (repeatable)")
    args = ap.parse_args()
    names = args.model or list(corpus.CORPUS)
    if args.outdir:
        args.outdir.mkdir(parents=True, exist_ok=True)
        return run(args.outdir, names, args.n)
    with tempfile.TemporaryDirectory(prefix="hspi-corpus-") as tmp:
        return run(Path(tmp), names, args.n)


if __name__ == "__main__":
    sys.exit(main())
