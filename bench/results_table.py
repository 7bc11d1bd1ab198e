"""Render one or more `hspi eval -o REPORT.json` files as the markdown tables of docs/results.md.

    python bench/results_table.py eval_a.json eval_b.json > table.md

Prints the accuracy table (ours / svm-bits per n), the cells where the baseline wins, the
values held-out sides could not predict, and the wall time of each protocol case.
"""

import json
import sys

from hspi_onnx.learn.results import EvalReport, losses, markdown


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: results_table.py REPORT.json [REPORT.json ...]")
    merged = EvalReport.merged([EvalReport.from_dict(json.load(open(p, encoding="utf-8"))) for p in sys.argv[1:]])
    print(
        f"DB {merged.db} (digest {merged.db_digest}): {merged.platforms} platforms, models "
        f"{', '.join(merged.models)}; train probes {merged.train_probes}, test probes {merged.test_probes}; "
        f"cells read 'ours / svm-bits' in % of query groups; {merged.seconds:.0f} s of eval.\n"
    )
    print(markdown(merged))
    lost = losses(merged)
    print(f"\nsvm-bits beats ours in {len(lost)} cells" + (":\n" if lost else "."))
    for line in lost:
        print(f"- {line}")
    unseen = sorted(
        {(r.protocol, r.holdout, r.target, ", ".join(r.unseen_values)) for r in merged.records if r.unseen_values}
    )
    if unseen:
        print("\nNot predictable (values the training side never saw):\n")
        for protocol, holdout, target, values in unseen:
            print(f"- {protocol} −{holdout}, {target}: {values}")
    print("\n| case | seconds |\n|---|---|")
    for t in merged.timing:
        print(f"| {t.protocol} {t.holdout} {t.form} | {t.seconds} |")


if __name__ == "__main__":
    main()
