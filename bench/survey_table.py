"""Render `hspi survey --json` or `hspi db classes --json` as markdown tables (docs/).

hspi survey --json -q > survey.json && python bench/survey_table.py survey.json
hspi db classes --db refdb --json > classes.json && python bench/survey_table.py classes.json
"""

import json
import sys
from collections import defaultdict


def knobs_summary(labels: list[str]) -> str:
    """Collapse the labels of one class: each knob with the values it takes there."""
    by_rt = defaultdict(lambda: defaultdict(set))
    for label in labels:
        rt, _dev, prec, knobs = label.split("/")
        entry = by_rt[(rt.split("@")[0], prec)]
        for kv in knobs.split(","):
            if "=" in kv:
                k, v = kv.split("=", 1)
                entry[k].add(v)
    parts = []
    for (rt, prec), knobs in sorted(by_rt.items()):
        members = [lb for lb in labels if lb.startswith(rt + "@") and lb.split("/")[2] == prec]
        combos = 1
        for values in knobs.values():
            combos *= len(values)
        if combos == len(members):  # the whole product: say it compactly
            ks = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in sorted(knobs.items()) if k != "mode")
            parts.append(f"{rt} {prec} ({ks})")
        else:  # part of a product: list each knob string
            parts.append(f"{rt} {prec}: " + "; ".join(sorted(lb.split("/")[3] for lb in members)))
    return "<br>".join(parts)


def db_classes(groups: list[dict]) -> None:
    for g in groups:
        print(
            f"### {g['model']} on {g['probes']}: {g['n_platforms']} platforms, {len(g['classes'])} classes, "
            f"{g['n_probes']} probes\n"
        )
        print("| class | size | nearest class: fraction of probes that separate | platforms |")
        print("|---:|---:|---|---|")
        for c in g["classes"]:
            others = [(s, j) for j, s in enumerate(g["separation"][c["id"]]) if j != c["id"]]
            near = f"{min(others)[1]}: {min(others)[0]:.3f}" if others else "-"
            flag = " (not repeatable)" if c["nondeterministic"] else ""
            print(f"| {c['id']} | {len(c['platforms'])} | {near} | {knobs_summary(c['platforms'])}{flag} |")
        print()


def main(path: str) -> None:
    report = json.load(open(path))
    if isinstance(report, list):
        db_classes(report)
        return
    for m in report["models"]:
        rt = defaultdict(int)
        for p in m["platforms"]:
            rt[p["platform"].split("@")[0]] += 1
        print(
            f"### {m['model']}: {m['n_platforms']} platforms, {m['n_classes']} classes "
            f"({', '.join(f'{k} {v}' for k, v in sorted(rt.items()))}), probes {m['probes']}\n"
        )
        print("| class | size | max rel. error vs fp64 | repeats | platforms |")
        print("|---:|---:|---:|---|---|")
        for c in m["classes"]:
            print(
                f"| {c['id']} | {len(c['platforms'])} | {c['rel_err']:.1e} | "
                f"{'yes' if c['repeats'] else 'NO'} | {knobs_summary(c['platforms'])} |"
            )
        if m["failed"]:
            print(f"\nfailed: {', '.join(f['platform'] for f in m['failed'])}")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
