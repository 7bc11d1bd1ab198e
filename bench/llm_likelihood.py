"""Likelihood evidence on sampled traffic without log-probabilities (docs/llm-audit.md): is the
decision calibrated, and how many tokens does it need?

Each candidate stack samples answers (temperature 1, a fixed seed) to N chats; their texts,
decoded as a server prints them, become a logged chat log without log-probabilities; ``hspi match
LOG --replay`` teacher-forces each log on every candidate and decides by likelihood
(hspi_onnx/match/likelihood.py). Printed per true stack: tokens scored, whether the true stack was
rejected (the bound says: with probability at most alpha), the classes left, and the tokens each
other stack's rejection needed. ``--plot`` draws, for each log, every stack's gap to the most
likely one against the tokens scored, with the rejection threshold.

    python bench/llm_likelihood.py [-n 24] [--work DIR] [--json] [--plot likelihood.png]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STACKS = [
    "llamacpp/*/f32/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "llamacpp/*/q4_k_m/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "llamacpp/*/q4_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "transformers/*/bf16/*attn=sdpa*threads=1",
]
TOPICS = [
    "volcanoes",
    "the moon",
    "bread",
    "rivers",
    "chess",
    "bees",
    "glass",
    "winter",
    "trains",
    "music",
    "salt",
    "maps",
    "owls",
    "paper",
    "clocks",
    "deserts",
    "coffee",
    "bridges",
    "whales",
    "stars",
    "gardens",
    "rain",
    "copper",
    "kites",
]
FORMS = ["Tell me something interesting about {}.", "Write two sentences about {}.", "Why do people like {}?"]


def hspi(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *map(str, args)], capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=24, help="chats per log (16 sampled tokens each)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hspi-likelihood-"))
    work.mkdir(parents=True, exist_ok=True)
    chats = [
        [{"role": "user", "content": FORMS[i % len(FORMS)].format(TOPICS[i % len(TOPICS)])}] for i in range(args.n)
    ]
    (work / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    probes, db = work / "sampled.npz", work / "db"
    run = hspi(
        "probes",
        "make",
        "smollm2",
        "--chats",
        work / "chats.jsonl",
        "-n",
        args.n,
        "--sample-seed",
        args.seed,
        "-o",
        probes,
    )
    assert run.returncode == 0, run.stderr
    globs = [x for g in STACKS for x in ("-p", g)]
    run = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-q", *globs)
    assert run.returncode == 0, run.stderr

    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.db.report import classes as db_classes
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.chats import tokenizer_for
    from hspi_onnx.inputs.model import resolve_model

    ref = ReferenceDB(db)
    group = next(g for g in db_classes(ref) if g["model"] == "smollm2")
    data = generation_outputs(ref, group["model_sha256"], group["probes_sha256"], np.arange(args.n))
    tokenizer = tokenizer_for(resolve_model("smollm2"))
    stop = set(resolve_model("smollm2").generation.stop)
    rows = []
    curves = {}
    for true in sorted(data):
        log = work / f"log-{len(rows)}.jsonl"
        lines = []
        for i, chat in enumerate(chats):
            ids = [int(t) for t in data[true]["tokens"][i] if t >= 0]
            finish = "stop" if ids and ids[-1] in stop else "length"
            text = tokenizer.decode(
                [t for t in ids if t not in stop], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            req = {"model": "smollm2", "messages": chat, "temperature": 1, "max_tokens": 16}
            resp = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
            lines.append(json.dumps({"request": req, "response": resp}))
        log.write_text("\n".join(lines) + "\n")
        run = hspi("match", log, "--db", db, "--replay", "--json", "-q", *globs)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(run.stdout)
        lk = report["likelihood"]
        left = [p for c in report["classes"] for p in c["platforms"]]
        short = {label: label.split("/")[0].split("@")[0] + "/" + label.split("/")[2] for label in lk["stacks"]}
        mine = next(label for label in lk["stacks"] if short[label] == short[true])
        others = {short[k]: v["tokens_needed"] for k, v in lk["stacks"].items() if k != mine}
        rows.append(
            {
                "true": short[true],
                "tokens": lk["tokens"],
                "tokens_used": lk["tokens_used"],
                "true_rejected": lk["stacks"][mine]["rejected"],
                "classes_left": len(report["classes"]),
                "left": sorted(short[p] for p in left),
                "tokens_to_reject": others,
                "threshold": lk["threshold_nats"],
            }
        )
        curves[short[true]] = {short[k]: v["gap_by_token"] for k, v in lk["stacks"].items()}
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{args.n} chats of 16 sampled tokens per log; alpha 0.01, threshold {rows[0]['threshold']:.2f} nats")
        head = f"{'true stack':22} {'scored':>11} {'true rejected':>13} {'left':>4}  tokens to reject each other stack"
        print(head)
        for r in rows:
            rej = ", ".join(f"{k} {v if v is not None else '-'}" for k, v in sorted(r["tokens_to_reject"].items()))
            print(
                f"{r['true']:22} {r['tokens_used']:>5}/{r['tokens']:<5} {str(r['true_rejected']):>13} {r['classes_left']:>4}  {rej}"
            )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), sharey=True)
        for ax, (true, per) in zip(np.atleast_1d(axes), curves.items()):
            for stack, gap in sorted(per.items()):
                ax.plot(np.arange(1, len(gap) + 1), gap, label=stack, lw=2.5 if stack == true else 1)
            ax.axhline(rows[0]["threshold"], color="k", ls="--", lw=0.8)
            ax.set_title(f"sampled by {true}", fontsize=9)
            ax.set_xlabel("tokens scored")
        np.atleast_1d(axes)[0].set_ylabel("nats behind the most likely")
        np.atleast_1d(axes)[-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot -> {args.plot}")


if __name__ == "__main__":
    main()
