"""Estimates for LLM stacks outside the DB (issue 29): leave-one-stack-out accuracy and
calibration of the estimator, and the claim "full precision" checked by ours and by the baselines
on the same requests.

Evidence: hspi_onnx/cli/estimates.py's ``db_evidence`` (every DB platform's greedy answer to every
chat, top-5 log-probabilities with every digit, against the reference teacher-forced on the same
tokens; the forced rows are built into the DB, so a second run computes nothing). A stack is a
(runtime, precision, quantization recipe); all its variants leave the training data together,
and the chats are split too: trained on the other stacks' answers to every other chat, tested on
the held-out stack's answers to the rest (two folds), so no chat is both trained and tested on.

Printed:

1. accuracy per attribute at n = 1, 2, 4, 8, 16 requests (8 random sets of a fold's chats), with
   the tokens those requests hold;
2. calibration: each held-out stack's probabilities with a temperature fitted on the other
   stacks' out-of-stack predictions (nested, so the stack judged never calibrates itself):
   expected calibration error, and with ``--plot`` a reliability diagram;
3. per stack at 16 requests: the truth, the estimate, and the nearest other stack by its mean
   features (where that stack's class differs, no classifier on these features carries over);
4. the task "a quantized model served while full precision (fp32) is claimed": power (held-out
   stacks with weights <= 8-bit) and false alarms (held-out fp32 stacks) at each n for: ours
   (INCONSISTENT when the calibrated P(32-bit weights) or P(fp32 compute) is below 0.05); the
   HSPI paper's SVM on the IEEE-754 bits of each request's first-position top-5 log-probabilities
   (StandardScaler -> LinearSVC, trained leave-one-stack-out on "fp32 or not", a majority of the n
   requests decides); logprob tracking (Chauvin et al. 2025: a permutation test on the first
   token's top-k log-probabilities, here paired per chat against the reference stack with random
   sign flips, since the chats differ); and with ``--met-db`` Model Equality Testing (Gao et al.,
   ICLR 2025: MMD with a Hamming kernel on sampled completions, permutation test), on a DB of
   sampled answers (``--sample-seed``) to the same chats;
5. the paper's white-box setting: the transformers quantizer set (fp32, bf16, fp16, quanto int8
   and int4, torchao int8 weight-only and dynamic, HQQ 4-bit), a classifier of the stack on our
   features and on the IEEE bits, trained on 24 chats and tested on the 8 others.

    python bench/llm_estimates.py DB --probes CHATS.npz [--met-db DIR] [--plot PNG] [--json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

NS = (1, 2, 4, 8, 16)
FOLDS = 2  # chats split in two: trained on one half's answers, tested on the other's
ALPHA = 0.05
PERMUTATIONS = 999
MET_PERMUTATIONS = 199  # MET's MMD is a pooled-kernel sum: fewer permutations keep it to a minute


def nested_calibration(records: list[dict]) -> list[dict]:
    """Each record with ``probs``: calibrated by a temperature fitted on the other stacks' records."""
    from hspi_onnx.learn.llm_estimator import calibrated, fit_temperature

    out = []
    for attr in sorted({r["attribute"] for r in records}):
        mine = [r for r in records if r["attribute"] == attr]
        for stack in sorted({r["stack"] for r in mine}):
            t = fit_temperature([r for r in mine if r["stack"] != stack and r["n"] in (1, 4, 16)])
            for r in mine:
                if r["stack"] == stack:
                    out.append({**r, "probs": calibrated(r, t), "temperature": t})
    return out


def reliability(recs: list[dict], bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
    """(expected calibration error, per confidence bin: mean confidence, accuracy, count)."""
    conf = np.array([max(r["probs"].values()) for r in recs])
    hit = np.array([max(r["probs"], key=r["probs"].get) == r["truth"] for r in recs], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            rows.append((float(conf[m].mean()), float(hit[m].mean()), int(m.sum())))
            ece += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return float(ece), rows


def ieee_bits(lps: np.ndarray) -> np.ndarray:
    """The 32 bits of each float32 value (learn/features.py's), the values' axis flattened."""
    from hspi_onnx.learn.features import float32_bits

    return float32_bits(lps).reshape(*lps.shape[:-1], -1).astype(np.float32)


def svm_bits_loso(ev, full: np.ndarray, stacks: list[str], picks: dict, folds: int = FOLDS) -> dict:
    """Out-of-stack "not fp32" votes of the paper's SVM, split by stack and by chat as ours:
    {(platform, n, draw): rejects}."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    first = np.stack([ev.data[lab]["topk_logprobs"][:, 0, :5] for lab in ev.labels])  # (P, chats, 5)
    bits = ieee_bits(first)  # (P, chats, 160)
    n_chats = bits.shape[1]
    out = {}
    for fold in range(folds):
        train_chats = np.array([c for c in range(n_chats) if c % folds != fold])
        for held in sorted(set(stacks)):
            test = [i for i, s in enumerate(stacks) if s == held]
            train = [i for i, s in enumerate(stacks) if s != held]
            xs = bits[train][:, train_chats].reshape(-1, bits.shape[2])
            ys = np.repeat(~full[train], len(train_chats))
            scaler = StandardScaler().fit(xs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                svm = LinearSVC(C=1.0, max_iter=5000, random_state=0).fit(scaler.transform(xs), ys)
            for i in test:
                votes = svm.predict(scaler.transform(bits[i]))
                for (pi, n), sets in picks.items():
                    if pi == i:
                        for d, pick in enumerate(sets):
                            if pick[0] % folds == fold:
                                out[(i, n, d)] = bool(votes[pick].mean() > 0.5)
    return out


def lt_pvalue(sus_ids, sus_lps, ref_ids, ref_lps, rng) -> float:
    """Logprob tracking, paired: per chat the suspect's first-position log-probability of each of
    the reference's top-5 tokens minus the reference's (where the suspect lists it), statistic the
    sum over ranks of the absolute mean difference, null by random sign flips per chat."""
    n = len(sus_ids)
    d = np.full((n, 5), np.nan)
    for c in range(n):
        where = {int(t): v for t, v in zip(sus_ids[c], sus_lps[c])}
        for r in range(5):
            t = int(ref_ids[c][r])
            if t in where:
                d[c, r] = where[t] - ref_lps[c][r]
    d = np.nan_to_num(d, nan=0.0)

    def stat(signs: np.ndarray) -> np.ndarray:
        return np.abs((signs[..., None] * d).mean(axis=-2)).sum(axis=-1)

    observed = stat(np.ones(n))
    flips = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, n))
    return float((1 + (stat(flips) >= observed - 1e-15).sum()) / (PERMUTATIONS + 1))


def hamming_mmd(a: list[tuple[int, np.ndarray]], b: list[tuple[int, np.ndarray]], rng) -> float:
    """MET's test: MMD^2 (unbiased) between samples of (chat, completion) with the kernel
    1[same chat] * share of equal tokens at equal positions; p-value by permutation."""
    pooled = a + b
    m = len(pooled)
    chats = np.array([c for c, _ in pooled])
    toks = np.stack([t for _, t in pooled])
    same = (toks[:, None, :] == toks[None, :, :]).mean(axis=2) * (chats[:, None] == chats[None, :])
    np.fill_diagonal(same, 0.0)

    def mmd(in_a: np.ndarray) -> float:
        na, nb = in_a.sum(), (~in_a).sum()
        kaa = same[np.ix_(in_a, in_a)].sum() / (na * (na - 1)) if na > 1 else 0.0
        kbb = same[np.ix_(~in_a, ~in_a)].sum() / (nb * (nb - 1)) if nb > 1 else 0.0
        kab = same[np.ix_(in_a, ~in_a)].sum() / (na * nb)
        return float(kaa + kbb - 2 * kab)

    first = np.zeros(m, dtype=bool)
    first[: len(a)] = True
    observed = mmd(first)
    count = sum(mmd(rng.permutation(first)) >= observed - 1e-15 for _ in range(MET_PERMUTATIONS))
    return (1 + count) / (MET_PERMUTATIONS + 1)


def met_power(met_db: Path, claimed: str, ns, draws: int, seed: int) -> dict:
    """MET power per suspect stack of the sampled DB against ``claimed``'s samples. The sampled
    probe sets (one per seed) are split in two: the claimed stack's samples come from the first
    half of the seeds, the suspects' from the second, so that no two compared samples share a
    seed (same seeds would couple the samples and hide differences)."""
    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.db.report import classes as db_classes
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.labels import Platform, select

    rng = np.random.default_rng(seed)
    db = ReferenceDB(met_db)
    groups = sorted(db_classes(db), key=lambda g: g["probes"])
    half = len(groups) // 2
    samples: dict[str, list[list[tuple[int, np.ndarray]]]] = {}
    for k, g in enumerate(groups):
        data = generation_outputs(db, g["model_sha256"], g["probes_sha256"], np.arange(g["n_probes"]))
        for label, rows in data.items():
            own = samples.setdefault(label, [[], []])[int(k >= half)]
            own += [(c, rows["tokens"][c].astype(np.int64)) for c in range(g["n_probes"])]
    (ref_label,) = [str(p) for p in select([Platform.parse(x) for x in samples], [claimed])]
    ref = samples[ref_label][0]
    out: dict = {"reference": ref_label, "reference_samples": len(ref), "seeds": len(groups), "stacks": {}}
    for label, (_, own) in sorted(samples.items()):
        per_n = {}
        for n in ns:
            rejects = []
            for _ in range(draws):
                pick = rng.choice(len(own), size=min(n, len(own)), replace=False)
                rejects.append(hamming_mmd([own[i] for i in pick], ref, rng) <= ALPHA)
            per_n[n] = float(np.mean(rejects))
        out["stacks"][label] = per_n
    return out


def white_box(ev, rng) -> dict:
    """Stack of the transformers quantizer set from n held-out chats: ours and the IEEE-bit SVM."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from hspi_onnx.learn.llm_estimator import stack_of

    keep = [i for i, lab in enumerate(ev.labels) if lab.startswith("transformers@")]
    y = np.array([stack_of(ev.labels[i]) for i in keep])
    n_chats = ev.x.shape[1]
    train_c, test_c = np.arange(0, n_chats * 3 // 4), np.arange(n_chats * 3 // 4, n_chats)
    x = np.nan_to_num(ev.x[keep], nan=0.0)
    ours = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    ours.fit(x[:, train_c].reshape(-1, x.shape[2]), np.repeat(y, len(train_c)))
    bits = ieee_bits(np.stack([ev.data[ev.labels[i]]["topk_logprobs"][:, 0, :5] for i in keep]))
    scaler = StandardScaler().fit(bits[:, train_c].reshape(-1, bits.shape[2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svm = LinearSVC(max_iter=5000, random_state=0).fit(
            scaler.transform(bits[:, train_c].reshape(-1, bits.shape[2])), np.repeat(y, len(train_c))
        )
    res: dict = {
        "stacks": sorted(set(y.tolist())),
        "platforms": len(keep),
        "train_chats": len(train_c),
        "ours": {},
        "svm_bits": {},
    }
    for n in [n for n in NS if n <= len(test_c)]:
        hit_o, hit_s = [], []
        for k in range(len(keep)):
            for _ in range(8):
                pick = rng.choice(test_c, size=n, replace=False)
                hit_o.append(ours.predict(x[k, pick].mean(axis=0, keepdims=True))[0] == y[k])
                votes = svm.predict(scaler.transform(bits[k, pick]))
                vals, counts = np.unique(votes, return_counts=True)
                hit_s.append(vals[np.argmax(counts)] == y[k])
        res["ours"][n], res["svm_bits"][n] = float(np.mean(hit_o)), float(np.mean(hit_s))
    return res


def main() -> None:
    from hspi_onnx.cli.estimates import DEFAULT_REFERENCE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", type=Path)
    ap.add_argument("--probes", type=Path, default=None, help="the chat probe set the DB was built with")
    ap.add_argument("--reference", default=DEFAULT_REFERENCE)
    ap.add_argument("--met-db", type=Path, default=None, help="a DB of sampled answers to the same chats")
    ap.add_argument("--met-claimed", default="llamacpp/*/f32/*fa=off,*")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from hspi_onnx.cli.estimates import db_evidence
    from hspi_onnx.learn.llm_attributes import ATTRIBUTES, llm_attributes
    from hspi_onnx.learn.llm_estimator import feature_scaler, leave_one_stack_out, stack_of

    ev = db_evidence(args.db, None, args.probes, args.reference, quiet=True)
    n_chats = ev.x.shape[1]
    ns = [n for n in NS if n <= n_chats // FOLDS]
    stacks = [stack_of(lab) for lab in ev.labels]
    tokens = np.array([[int((ev.data[lab]["tokens"][c] >= 0).sum()) for c in range(n_chats)] for lab in ev.labels])
    records = leave_one_stack_out(ev.x, ev.labels, ns, gguf_weights=ev.gguf_weights, folds=FOLDS)
    cal = nested_calibration(records)
    report: dict = {
        "platforms": len(ev.labels),
        "stacks": len(set(stacks)),
        "chats": n_chats,
        "answers_forced": ev.answers_forced,
        "reference": ev.reference,
        "gguf_weights": ev.gguf_weights,
        "tokens_per_request": float(tokens.mean()),
    }

    # 1. accuracy
    acc = {
        a: {
            n: float(
                np.mean(
                    [
                        max(r["probs"], key=r["probs"].get) == r["truth"]
                        for r in cal
                        if r["attribute"] == a and r["n"] == n
                    ]
                )
            )
            for n in ns
        }
        for a in ATTRIBUTES
    }
    coarse = {"<=4-bit": "quantized", "5-6-bit": "quantized", "8-bit": "quantized"}

    def coarse_hit(r: dict) -> bool:
        p: dict = {}
        for c, v in r["probs"].items():
            p[coarse.get(c, c)] = p.get(coarse.get(c, c), 0.0) + v
        return max(p, key=p.get) == coarse.get(r["truth"], r["truth"])

    acc["weights, 3 classes (<=8-bit, 16-bit, 32-bit)"] = {
        n: float(np.mean([coarse_hit(r) for r in cal if r["attribute"] == "weights" and r["n"] == n])) for n in ns
    }
    report["accuracy"] = acc
    # 2. calibration
    report["calibration"] = {}
    for a in ATTRIBUTES:
        ece, rows = reliability([r for r in cal if r["attribute"] == a])
        report["calibration"][a] = {"ece": ece, "bins": rows}
    # 3. per stack, and the nearest other stack
    flat = np.nan_to_num(ev.x.reshape(-1, ev.x.shape[2]), nan=0.0)
    mean, scale = feature_scaler(flat)
    centre = {
        s: ((np.nan_to_num(ev.x[[i for i, t in enumerate(stacks) if t == s]], nan=0.0) - mean) / scale).mean(
            axis=(0, 1)
        )
        for s in set(stacks)
    }
    truth = {stack_of(lab): llm_attributes(lab, ev.gguf_weights) for lab in ev.labels}
    per_stack = {}
    for s in sorted(set(stacks)):
        near = min((float(np.linalg.norm(centre[s] - centre[o])), o) for o in centre if o != s)[1]
        row = {
            "truth": {a: truth[s][a] for a in ("weights", "compute")},
            "nearest_stack": near,
            "nearest_truth": {a: truth[near][a] for a in ("weights", "compute")},
        }
        for a in ("weights", "compute"):
            mine = [r for r in cal if r["stack"] == s and r["attribute"] == a and r["n"] == ns[-1]]
            best = [max(r["probs"], key=r["probs"].get) for r in mine]
            row[f"{a}_estimate"] = max(sorted(set(best)), key=best.count)
            row[f"{a}_accuracy"] = float(np.mean([b == truth[s][a] for b in best]))
            row[f"{a}_p"] = float(np.mean([max(r["probs"].values()) for r in mine]))
        per_stack[s] = row
    report["per_stack"] = per_stack
    report["nearest_stack_agrees"] = {
        a: sum(r["nearest_truth"][a] == r["truth"][a] for r in per_stack.values()) for a in ("weights", "compute")
    }

    # 4. the claim "fp32" against quantized and honest stacks
    full = np.array(
        [
            llm_attributes(lab, ev.gguf_weights)["weights"] == "32-bit"
            and llm_attributes(lab, ev.gguf_weights)["compute"] == "fp32"
            for lab in ev.labels
        ]
    )
    quant = np.array(
        [llm_attributes(lab, ev.gguf_weights)["weights"] in ("<=4-bit", "5-6-bit", "8-bit") for lab in ev.labels]
    )
    half = np.array([llm_attributes(lab, ev.gguf_weights)["weights"] == "16-bit" for lab in ev.labels])
    picks: dict = {}
    by_key: dict = {}
    for r in cal:
        i = ev.labels.index(r["platform"])
        picks.setdefault((i, r["n"]), {})[(r["fold"], r["draw"])] = r["requests"]
        by_key.setdefault((i, r["n"], (r["fold"], r["draw"])), {})[r["attribute"]] = r["probs"]
    picks = {k: [v[d] for d in sorted(v)] for k, v in picks.items()}
    ours = {
        k: v["weights"].get("32-bit", 0.0) < ALPHA or v["compute"].get("fp32", 0.0) < ALPHA for k, v in by_key.items()
    }
    accepted = {
        k: v["weights"].get("32-bit", 0.0) >= 1 - ALPHA and v["compute"].get("fp32", 0.0) >= 1 - ALPHA
        for k, v in by_key.items()
    }
    svm = svm_bits_loso(ev, full, stacks, picks)
    rng = np.random.default_rng(0)
    (ref_label,) = [lab for lab in ev.labels if lab == ev.reference] or [None]
    lt = {}
    if ref_label is not None:
        r = ev.data[ref_label]
        for (i, n), sets in picks.items():
            s = ev.data[ev.labels[i]]
            for d, pick in enumerate(sets):
                p = lt_pvalue(
                    s["topk_ids"][pick, 0, :5],
                    s["topk_logprobs"][pick, 0, :5].astype(np.float64),
                    r["topk_ids"][pick, 0, :5],
                    r["topk_logprobs"][pick, 0, :5].astype(np.float64),
                    rng,
                )
                lt[(i, n, d)] = p <= ALPHA

    def rate(votes: dict, rows: np.ndarray, n: int) -> float | None:
        vals = [v for (i, m, _), v in votes.items() if m == n and rows[i] and ev.labels[i] != ref_label]
        return float(np.mean(vals)) if vals else None

    methods = {"ours (estimates)": ours, "svm-bits (HSPI paper)": svm, "logprob tracking": lt}
    report["claim_fp32"] = {
        name: {
            "power": {n: rate(v, quant, n) for n in ns},
            "power_16bit": {n: rate(v, half, n) for n in ns},
            "false_alarm": {n: rate(v, full, n) for n in ns},
        }
        for name, v in methods.items()
    }
    report["claim_fp32_accepted"] = {
        "quantized": {n: rate(accepted, quant, n) for n in ns},
        "16-bit": {n: rate(accepted, half, n) for n in ns},
        "fp32": {n: rate(accepted, full, n) for n in ns},
    }
    report["claim_fp32_counts"] = {
        "quantized_platforms": int(quant.sum()),
        "16bit_platforms": int(half.sum()),
        "fp32_platforms": int(full.sum()) - (ref_label is not None),
    }
    if args.met_db:
        report["met"] = met_power(args.met_db, args.met_claimed, [4, 16, 32, 64, 128], 10, 0)

    # 5. white box
    report["white_box"] = white_box(ev, np.random.default_rng(1))

    if args.plot:
        plot(report, args.plot)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print_report(report, ns)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    for a, c in report["calibration"].items():
        xs = [b[0] for b in c["bins"]]
        ys = [b[1] for b in c["bins"]]
        ax.plot(xs, ys, marker="o", label=f"{a} (ECE {c['ece']:.2f})")
    ax.set_xlabel("estimated probability of the most likely class")
    ax.set_ylabel("share correct (held-out stacks)")
    ax.set_title(f"leave-one-stack-out, {report['platforms']} platforms in {report['stacks']} stacks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_report(r: dict, ns: list[int]) -> None:
    tok = r["tokens_per_request"]
    print(
        f"{r['platforms']} platforms in {r['stacks']} stacks, {r['chats']} chats, {r['answers_forced']} answers "
        f"forced on {r['reference']}; {tok:.1f} tokens per request"
    )
    print(f"weights of the GGUF files as they hold them: {r['gguf_weights']}\n")
    print("| attribute | " + " | ".join(f"n={n} ({n * tok:.0f} tok)" for n in ns) + " | ECE |")
    print("|---|" + "---|" * (len(ns) + 1))
    for a, per in r["accuracy"].items():
        ece = f"{r['calibration'][a]['ece']:.3f}" if a in r["calibration"] else "-"
        print(f"| {a} | " + " | ".join(f"{per[n]:.2f}" for n in ns) + f" | {ece} |")
    print(f"\nper stack at n={ns[-1]}:")
    print(
        "| stack | weights | estimate (share, p) | compute | estimate (share, p) | nearest other stack (its weights, compute) |"
    )
    print("|---|---|---|---|---|---|")
    for s, row in r["per_stack"].items():
        t, nt = row["truth"], row["nearest_truth"]
        print(
            f"| {s} | {t['weights']} | {row['weights_estimate']} ({row['weights_accuracy']:.2f}, {row['weights_p']:.2f}) | "
            f"{t['compute']} | {row['compute_estimate']} ({row['compute_accuracy']:.2f}, {row['compute_p']:.2f}) | "
            f"{row['nearest_stack']} ({nt['weights']}, {nt['compute']}) |"
        )
    agree = r["nearest_stack_agrees"]
    print(
        f"\nnearest other stack has the same class: weights {agree['weights']}/{r['stacks']}, compute {agree['compute']}/{r['stacks']}"
    )
    c = r["claim_fp32_counts"]
    print(
        f"\nclaim fp32: share rejected of {c['quantized_platforms']} quantized platforms (power) / of "
        f"{c['16bit_platforms']} 16-bit platforms / of {c['fp32_platforms']} fp32 platforms (false alarms)"
    )
    print("| method | " + " | ".join(f"n={n}" for n in ns) + " |")
    print("|---|" + "---|" * len(ns))
    for name, v in r["claim_fp32"].items():
        cells = []
        for n in ns:
            got = (v["power"][n], v["power_16bit"][n], v["false_alarm"][n])
            cells.append(" / ".join(f"{x:.2f}" for x in got) if None not in got else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    acc = r["claim_fp32_accepted"]
    print(
        "ours, share CONSISTENT: "
        + "; ".join(f"{k} " + ", ".join(f"n={n} {v[n]:.2f}" for n in ns if v[n] is not None) for k, v in acc.items())
    )
    if "met" in r:
        m = r["met"]
        print(
            f"\nMET (sampled completions, {m['seeds']} seeds: the claimed stack {m['reference']} "
            f"on the first half ({m['reference_samples']} samples), each suspect on the second; share rejected)"
        )
        for label, per in m["stacks"].items():
            print(f"  {label}: " + ", ".join(f"n={n} {p:.2f}" for n, p in per.items()))
    w = r["white_box"]
    print(
        f"\nwhite box: {len(w['stacks'])} transformers stacks, trained on {w['train_chats']} chats, tested on the others"
    )
    for name in ("ours", "svm_bits"):
        print(f"  {name}: " + ", ".join(f"n={n} {v:.2f}" for n, v in w[name].items()))


if __name__ == "__main__":
    main()
