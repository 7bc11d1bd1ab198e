"""Render `hspi survey knobs --json` as the markdown table of docs/equivalence-cpu.md: one row per
knob, one column per model and base platform, each cell the row's verdict (bits changed? label
changed?).

    hspi survey knobs -m digits -m lm --json -q > knobs.json; python bench/knob_table.py knobs.json
"""

import json
import sys

SHORT = {
    "no effect": "-",
    "labelled": "**labelled**",
    "label only": "label only",
    "pinned": "pinned",
    "not offered": "not offered",
    "refused": "refused",
    "error": "error",
    "BUG": "**BUG**",
}


def column(label: str) -> str:
    runtime = label.split("@", 1)[0]
    precision = label.split("/")[2]
    return f"{runtime} {precision}"


def main(path: str) -> None:
    report = json.load(open(path))
    models = report["models"]
    cols = [(m["model"], b["base"]) for m in models for b in m["bases"]]
    knobs = []
    for m in models:
        for r in m["rows"]:
            key = (r["kind"], f"{r['knob']}={r['value']}")
            if key not in knobs:
                knobs.append(key)
    cell = {(m["model"], r["base"], r["kind"], f"{r['knob']}={r['value']}"): r for m in models for r in m["rows"]}
    print("| knob | " + " | ".join(f"{model}: {column(base)}" for model, base in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for kind, name in knobs:
        cells = []
        for model, base in cols:
            r = cell.get((model, base, kind, name))
            if r is None:
                cells.append("")
                continue
            text = SHORT.get(r["verdict"], r["verdict"])
            if r["verdict"] in ("labelled", "label only") and r.get("label_diff"):
                text += f" ({r['label_diff'].split(' ', 1)[0]})"
            cells.append(text)
        shown = f"`{name}`" + (" (pin)" if kind == "setting" else "")
        print(f"| {shown} | " + " | ".join(cells) + " |")
    bugs = sum(m["bugs"] for m in models)
    host = models[0]["host"]
    print(
        f"\n{sum(len(m['rows']) for m in models)} variations, {bugs} where the bits changed and the label did not; "
        f"{host['cpu_model']} ({host['isa']}, {host['cores']} cores), {host['os']}, Python {host['python']}; "
        f"{models[0]['n']} probes per run."
    )
    for m in models:
        for b in m["bases"]:
            if b["error"] or not b["repeats"]:
                print(f"\nbaseline {b['base']} on {m['model']}: {b['error'] or 'not repeatable'}")


if __name__ == "__main__":
    main(sys.argv[1])
