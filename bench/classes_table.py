"""Markdown table of equivalence classes from `hspi db classes --db DB --json` (docs/adapters.md).

    hspi db classes --db DB --json > classes.json && python bench/classes_table.py classes.json

One row per class: size, runtime and precision, the knobs every member shares, and the knobs
that vary inside the class (settings that collapse together: they cannot be told apart).
"""

from __future__ import annotations

import json
import sys

from hspi_onnx.labels import Platform


def describe(labels: list[str]) -> tuple[str, str, str]:
    ps = [Platform.parse(lab) for lab in labels]
    head = sorted(
        {
            f"{p.runtime} {p.precision}"
            + (f" ({p.device.split(':')[1]})" if p.device.split(":")[1] not in ("amx",) else "")
            for p in ps
        }
    )
    knobs = sorted({k for p in ps for k, _ in p.knobs})
    fixed, varies = [], []
    for k in knobs:
        values = sorted({p.knob.get(k, "-") for p in ps})
        (fixed if len(values) == 1 else varies).append(f"{k}={'/'.join(values)}")
    return ", ".join(head), " ".join(fixed), " ".join(varies) or "-"


def main(path: str) -> None:
    for group in json.load(open(path, encoding="utf-8")):
        classes = group["classes"]
        print(
            f"**{group['model']}** on {group['probes']}: {group['n_platforms']} platforms, "
            f"{len(classes)} classes, {group['n_probes']} probes\n"
        )
        print("| size | runtime, precision | shared knobs | collapse together (vary inside the class) |")
        print("|---:|---|---|---|")
        for c in sorted(classes, key=lambda c: (-len(c["platforms"]), c["platforms"][0])):
            head, fixed, varies = describe(c["platforms"])
            print(f"| {len(c['platforms'])} | {head} | {fixed} | {varies} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
