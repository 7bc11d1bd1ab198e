"""What ONE request identifies, per chat, on a language model's DB (docs/llm.md).

For each chat of the DB's probe set and each evidence mode (greedy text alone; top-5
log-probabilities with every digit, rounded to 4 or 2 decimals, or normalized by the server and
compared by the logits' differences), how many classes one request of 16 tokens identifies: the
request simulated from the class's own DB rows is consistent with that class only. Done for the
default platforms (``hspi runtimes variants MODEL``) and for all the DB holds.

    python bench/llm_identification.py DB [--model smollm2] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hspi_onnx.db.generations import generation_outputs
from hspi_onnx.db.report import classes as db_classes
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import default_kind
from hspi_onnx.match.generation import as_query, consistent
from hspi_onnx.run.adapter import selected_variants

MODES = [("text", 0, None, "exact"), ("top5", 5, None, "exact"), ("top5@4dp", 5, 4, "exact")]
MODES += [("top5@2dp", 5, 2, "exact"), ("top5-server", 5, None, "server")]


def identified(data: dict, reps: list[str], chat: int, k: int, digits, norm: str) -> int:
    alone = 0
    for rep in reps:
        q = as_query({n: v[chat] for n, v in data[rep].items()}, k, chat, 16, digits)
        fits = [o for o in reps if consistent(q, {n: v[chat] for n, v in data[o].items()}, norm)]
        alone += fits == [rep]
    return alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    db = ReferenceDB(args.db)
    group = next(g for g in db_classes(db) if g["model"] == args.model)
    info = resolve_model(args.model)
    default = {str(p) for _, p in selected_variants(info, default_kind(info), None, False)}
    ids = np.arange(group["n_probes"])
    data = generation_outputs(db, group["model_sha256"], group["probes_sha256"], ids, logits=True)
    out = []
    for matrix, keep in (("default", default), ("all", None)):
        classes = [[p for p in c["platforms"] if keep is None or p in keep] for c in group["classes"]]
        reps = [members[0] for members in classes if members]
        for mode, k, digits, norm in MODES:
            per_chat = [identified(data, reps, int(i), k, digits, norm) for i in ids]
            out.append({"matrix": matrix, "classes": len(reps), "mode": mode, "per_chat": per_chat})
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print("| matrix | evidence in the one request | classes identified, per chat |")
    print("|---|---|---|")
    for r in out:
        print(f"| {r['matrix']}, {r['classes']} classes | {r['mode']} | {', '.join(map(str, r['per_chat']))} |")


if __name__ == "__main__":
    main()
