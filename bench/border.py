"""Label-only identification with border probes (issue 16), against random probes' labels.

    python bench/border.py [--model digits] [-n 64] [--target 64] [--seeds 200] [--trials 20]

1. A DB of MODEL over every CPU platform here on ``n`` noise probes (its equivalence classes
   are the truth).
2. `hspi probes border` crafts a border set against those classes (timed: crafting time per
   class pair), then the DB is built on it (every platform, workers, determinism check).
3. Label-only accuracy, every DB platform in turn as the service, the suspect holding only
   top-1 labels:
   * random probes' labels (the argmax baseline) and border probes, each asked at random,
     n = 1, 4, 16 probes (``trials`` draws each): *strict* = only the true class stays
     consistent; *expected* = 1 / (classes consistent) when the true one is among them (a
     uniform pick), the accuracy a classifier-free guess reaches;
   * border probes asked adaptively (each next probe splits the classes still consistent
     best: hspi_onnx.border.tree), n = 1, 4, 16;
   * the same for precision (right when every consistent platform has the true precision;
     expected: the fraction of consistent classes with the true precision).
Printed: separable pairs, crafting time, and the accuracy table.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hspi_onnx.border.tree import identify
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import degrade
from hspi_onnx.labels import Platform

NS = (1, 4, 16)


def hspi(*args: str) -> dict | None:
    proc = subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *args], capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"hspi {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout) if "--json" in args else None


def accuracy(
    labels: dict[str, np.ndarray],
    classes: dict[str, str],
    rng,
    trials: int,
    n: int,
    adaptive: bool = False,
    only: set[str] | None = None,
) -> dict:
    """Mean strict / expected accuracy for the platform class and precision, every platform in
    turn as the service (``only``: just those), matched against every DB platform's labels."""
    plats = sorted(labels)
    table = np.stack([labels[p] for p in plats], axis=1)  # (probes, platforms)
    out = {"class_strict": 0.0, "class_expected": 0.0, "prec_strict": 0.0, "prec_expected": 0.0}
    count = 0
    for p in plats:
        if only is not None and p not in only:
            continue
        mine = labels[p]
        for _ in range(1 if adaptive else trials):
            if adaptive:
                alive, _ = identify(table, lambda k: int(mine[k]), n)
            else:
                sub = rng.choice(len(mine), size=min(n, len(mine)), replace=False)
                alive = (table[sub] == mine[sub, None]).all(axis=0)
            cons = sorted({classes[plats[i]] for i in np.flatnonzero(alive)})
            prec = {c: {Platform.parse(q).precision for q in c.split(" | ")} for c in cons}
            right = [c for c in cons if prec[c] == {Platform.parse(p).precision}]
            out["class_strict"] += cons == [classes[p]]
            out["class_expected"] += (1 / len(cons)) if classes[p] in cons else 0.0
            out["prec_strict"] += bool(cons) and len(right) == len(cons)
            out["prec_expected"] += len(right) / len(cons) if cons else 0.0
            count += 1
    return {k: round(v / max(count, 1), 3) for k, v in out.items()} | {
        "platforms": count // (1 if adaptive else trials)
    }


def separable(labels: dict[str, np.ndarray], classes: dict[str, str]) -> set[str]:
    """Platforms that the whole border set tells from every platform of another class."""
    plats = sorted(labels)
    table = np.stack([labels[p] for p in plats], axis=1)
    return {
        p
        for p in plats
        if {classes[plats[i]] for i in np.flatnonzero((table == labels[p][:, None]).all(axis=0))} == {classes[p]}
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits")
    ap.add_argument("-n", type=int, default=64, help="noise probes of the DB")
    ap.add_argument("--target", type=int, default=64, help="border probes at most")
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workdir", type=Path, help="keep the DB and border set here (reused when present)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        db, border, made_path = work / "db", work / "border.npz", work / "border.json"
        t0 = time.perf_counter()
        hspi("db", "build", args.model, "--db", str(db), "-n", str(args.n), "-q")
        t_db = time.perf_counter() - t0
        t0 = time.perf_counter()
        if made_path.is_file():
            made = json.loads(made_path.read_text())
        else:
            made = hspi(
                "probes",
                "border",
                args.model,
                "--db",
                str(db),
                "-o",
                str(border),
                "-n",
                str(args.target),
                "--seeds",
                str(args.seeds),
                "--json",
            )
            made["craft_s"] = round(time.perf_counter() - t0, 1)
            made_path.write_text(json.dumps(made))
        t_craft = made["craft_s"]
        t0 = time.perf_counter()
        hspi("db", "build", args.model, "--db", str(db), "--probes", str(border), "-q")
        t_border_db = time.perf_counter() - t0
        ref = ReferenceDB(db)
        groups = {g.probes_name: g for g in load_groups(ref)}
        noise = next(g for name, g in groups.items() if not name.startswith("border"))
        bgroup = next(g for name, g in groups.items() if name.startswith("border"))
        classes = noise.classes()
        rng = np.random.default_rng(0)
        argmax = lambda g: {p: degrade(g.outputs[p], "argmax").index[:, 0] for p in g.platforms if p in classes}  # noqa: E731
        rand_labels, border_labels = argmax(noise), argmax(bgroup)
        print(
            json.dumps(
                {
                    "model": args.model,
                    "platforms": len(classes),
                    "classes": made["classes"],
                    "border_probes": made["probes"],
                    "pairs": made["pairs"],
                    "separated_pairs": made["separated_pairs"],
                    "separable_fraction": made["separable_fraction"],
                    "craft_s": round(t_craft, 1),
                    "craft_s_per_pair": round(t_craft / made["pairs"], 3),
                    "runtime_calls": made["runtime_calls"],
                    "db_s": round(t_db, 1),
                    "border_db_s": round(t_border_db, 1),
                }
            )
        )
        sep = separable(border_labels, classes)
        plats = sorted(border_labels)
        table = np.stack([border_labels[p] for p in plats], axis=1)
        needed = []
        for p in sorted(sep):
            _, asked = identify(table, lambda k: int(border_labels[p][k]), len(table))
            for m in range(1, len(asked) + 1):  # the fewest questions after which only p's class remains
                a2, _ = identify(table, lambda k: int(border_labels[p][k]), m)
                if {classes[plats[i]] for i in np.flatnonzero(a2)} == {classes[p]}:
                    needed.append(m)
                    break
        if needed:
            print(
                f"adaptive questions until one class remains (separable platforms): mean {np.mean(needed):.1f}, "
                f"max {max(needed)}"
            )
        sep_classes = {classes[p] for p in sep}
        print(
            f"platforms the whole border set separates from every other class: {len(sep)} of {len(border_labels)} "
            f"({len(sep_classes)} of {len(set(classes.values()))} classes)"
        )
        print()
        print(
            "| probes | asked | platforms | n | class strict | class expected | precision strict | precision expected |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for name, labels, adaptive in (
            ("random (argmax baseline)", rand_labels, False),
            ("border", border_labels, False),
            ("border", border_labels, True),
        ):
            for only in (None, sep):
                for n in NS:
                    a = accuracy(labels, classes, rng, args.trials, n, adaptive, only)
                    print(
                        f"| {name} | {'adaptive' if adaptive else 'at random'} | "
                        f"{'all' if only is None else 'separable'} ({a['platforms']}) | {n} | {a['class_strict']:.3f} | "
                        f"{a['class_expected']:.3f} | {a['prec_strict']:.3f} | {a['prec_expected']:.3f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
