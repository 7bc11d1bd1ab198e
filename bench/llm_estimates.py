"""Estimates for LLM stacks outside the DB (issue 29), leave-one-stack-out: how well do the weight
bits, compute precision and KV-cache precision of a stack follow from its answers when none of
its variants is in the training data?

For a DB of SmolLM2's greedy generations over a chat probe set: every distinct generated token
sequence is teacher-forced on the reference stack (llama.cpp F32, flash attention off; built into
WORK/ref-db, cached), each platform's answer to each chat (top-5 log-probabilities, every digit)
becomes one row of hspi_onnx/learn/llm_evidence.py's features against the reference on the same
tokens, and the labels give the attributes (hspi_onnx/learn/llm_attributes.py). A stack is a
(runtime, precision, quantization recipe): all its variants (flash attention, threads, batch,
KV type) leave together. For each stack held out, a classifier per attribute (logistic
regression on standardized features) trained on the other stacks' rows predicts the attribute
from n requests of the held-out platforms (probabilities multiplied over the n chats); accuracy is
over the held-out platforms, n = 1, 2, 4, ... up to the chats the DB holds.

    python bench/llm_estimates.py DB [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REFERENCE = "llamacpp/*/f32/*fa=off,*kv=f16,nbatch=512,*threads=1,*"


def stack_of(label: str) -> str:
    from hspi_onnx.labels import Platform

    p = Platform.parse(label)
    return f"{p.runtime}/{p.precision}/{p.knob.get('quant', '-')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--chats", type=Path, default=None, help="the chats file the DB's probe set was made from")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hspi-estimates-"))
    work.mkdir(parents=True, exist_ok=True)

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.db.report import classes as db_classes
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.chats import builtin_chats, read_chats
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import chat_probe_set
    from hspi_onnx.learn.llm_attributes import ATTRIBUTES, llm_attributes
    from hspi_onnx.learn.llm_evidence import request_features

    db = ReferenceDB(args.db)
    group = next(g for g in db_classes(db) if g["model"] == "smollm2")
    n_chats = group["n_probes"]
    data = generation_outputs(db, group["model_sha256"], group["probes_sha256"], np.arange(n_chats))
    chats = (read_chats(args.chats) if args.chats else builtin_chats())[:n_chats]
    info = resolve_model("smollm2")

    # every distinct greedy sequence of every chat, teacher-forced on the reference stack
    seqs: dict[tuple[int, tuple[int, ...]], int] = {}
    for rows in data.values():
        for c in range(n_chats):
            toks = tuple(int(t) for t in rows["tokens"][c] if t >= 0)
            seqs.setdefault((c, toks), len(seqs))
    keys = sorted(seqs, key=seqs.get)
    forced = chat_probe_set(
        info, [chats[c] for c, _ in keys], "estimates-ref", continuations=[list(t) for _, t in keys]
    )
    probes_path = forced.save(work / "forced.npz")
    ref_db = work / "ref-db"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "db",
            "build",
            "smollm2",
            "--db",
            str(ref_db),
            "--probes",
            str(probes_path),
            "-q",
            "-p",
            REFERENCE,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rdb = ReferenceDB(ref_db)
    rgroup = next(g for g in db_classes(rdb) if g["probes_sha256"] == forced.sha256)
    (ref,) = generation_outputs(rdb, rgroup["model_sha256"], rgroup["probes_sha256"], np.arange(len(keys))).values()

    labels = [lab for lab in sorted(data) if llm_attributes(lab) is not None]
    rows_x = []
    for lab in labels:
        per_chat = []
        for c in range(n_chats):
            toks = tuple(int(t) for t in data[lab]["tokens"][c] if t >= 0)
            r = seqs[(c, toks)]
            ids = data[lab]["topk_ids"][c][:, :5].astype(np.int64)
            lps = data[lab]["topk_logprobs"][c][:, :5].astype(np.float64)
            per_chat.append(request_features(ids, lps, {k: v[r] for k, v in ref.items()}))
        rows_x.append(np.nan_to_num(np.asarray(per_chat), nan=0.0))
    x = np.asarray(rows_x)  # (platforms, chats, features)
    stacks = sorted({stack_of(lab) for lab in labels})
    ns = [n for n in (1, 2, 4, 8, 16, 32) if n <= n_chats]
    rng = np.random.default_rng(0)
    results = {a: {n: [0, 0] for n in ns} for a in ATTRIBUTES}
    for held in stacks:
        test = [i for i, lab in enumerate(labels) if stack_of(lab) == held]
        train = [i for i, lab in enumerate(labels) if stack_of(lab) != held]
        for attr in ATTRIBUTES:
            y = np.array([llm_attributes(lab)[attr] for lab in labels])
            if len(set(y[train])) < 2:
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
            clf.fit(x[train].reshape(-1, x.shape[2]), np.repeat(y[train], n_chats))
            classes = list(clf.classes_)
            for i in test:
                logp = clf.predict_log_proba(x[i])  # (chats, classes)
                for n in ns:
                    for _ in range(4):
                        pick = rng.choice(n_chats, size=n, replace=False)
                        guess = classes[int(np.argmax(logp[pick].sum(axis=0)))]
                        results[attr][n][0] += guess == y[i]
                        results[attr][n][1] += 1
    table = {a: {n: (ok / tot if tot else None) for n, (ok, tot) in per.items()} for a, per in results.items()}
    out = {"platforms": len(labels), "stacks": len(stacks), "chats": n_chats, "sequences": len(keys), "accuracy": table}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(
            f"{len(labels)} platforms in {len(stacks)} stacks, {n_chats} chats ({len(keys)} distinct sequences forced)"
        )
        print("attribute   " + "".join(f"n={n:<6}" for n in ns))
        for a in ATTRIBUTES:
            print(f"{a:11} " + "".join(f"{table[a][n]:<8.2f}" if table[a][n] is not None else "-       " for n in ns))


if __name__ == "__main__":
    main()
