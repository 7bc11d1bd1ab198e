"""Time to replay a suspect's own inputs over the default CPU matrix (`hspi match --replay`).

    python bench/replay.py [--models resnet lm] [-n 32] [--seed 0]

Per model: ``n`` inputs that are in no probe set (real images or English text, another seed)
are answered by a platform drawn at random from every platform available here; its raw outputs
and the inputs go into a plain ``np.savez`` file, the log a user would hold. Then, in a fresh
process each, as a user runs it:

1. ``hspi match log.npz --db DB --replay --model MODEL --json -q`` on an empty DB: every
   platform available here (the default matrix, no opt-in variants) runs over the inputs and is
   cached as a DB group; the match follows;
2. the same command again: everything cached, matching only;
3. ``--draws - 1`` more served platforms drawn at random, each answering the same inputs,
   matched against the cached replay (identified exactly, the served platform named?).

Printed per model: platforms run, the two wall times, the verdict, and whether it names the
platform that answered (exactly, among its bit-identical equivalents).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import ProbeSet, generate
from hspi_onnx.run.adapter import selected_variants
from hspi_onnx.run.runner import execute

TRAFFIC_KIND = {"image": "images", "tokens": "text", "tensor": "noise"}


def hspi(args: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(f"hspi {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return seconds, json.loads(proc.stdout)


def write_log(log: Path, model, traffic, adapter, hidden) -> None:
    """The file a user of the service on ``hidden`` would hold: the inputs and the raw outputs."""
    alone = ProbeSet("traffic", "replay", 0, "probe", traffic.inputs, np.arange(len(traffic)))
    outputs = execute(adapter, model, hidden, alone.bind(model)).outputs
    out = next(iter(outputs.values()))
    if len(traffic.inputs) == 1 and out.dtype.kind == "f":  # the plain file a user would write
        np.savez(log, inputs=traffic.primary, outputs=out)
    else:  # bfloat16 has no .npy dtype: stored as its bits, the dtype named in a meta record
        from hspi_onnx.outputs import dtype_name, to_storage
        from hspi_onnx.safenpz import save_npz

        save_npz(
            log,
            {"input_names": list(traffic.inputs), "dtype": dtype_name(out)},
            outputs=to_storage(out),
            **{f"input_{i}": v for i, v in enumerate(traffic.inputs.values())},
        )


def one_model(name: str, n: int, seed: int, draws: int, root: Path) -> dict:
    model = resolve_model(name)
    kind = TRAFFIC_KIND.get(model.primary.kind, "noise")
    traffic = generate(model, kind, n=n, seed=1000 + seed)  # another seed and kind than any DB probe set
    plan = selected_variants(model, "noise" if kind == "images" else kind, None)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(plan))[: max(1, draws)]
    adapter, hidden = plan[int(order[0])]
    log = root / f"{name}.npz"
    write_log(log, model, traffic, adapter, hidden)
    db = root / f"{name}-db"
    args = ["match", str(log), "--db", str(db), "--replay", "--model", name, "--json", "-q"]
    first, rep = hspi(args)
    second, again = hspi(args)
    verdict = rep["verdict"]
    named = []  # more served platforms, drawn at random, matched against the cached replay
    for k in order[1:]:
        write_log(log, model, traffic, *plan[int(k)])
        _, other = hspi(args)
        named.append(
            other["verdict"]["status"] == "identified (exact)" and str(plan[int(k)][1]) in other["verdict"]["platforms"]
        )
    return {
        "more_draws_identified": f"{sum(named)}/{len(named)}",
        "model": name,
        "inputs": n,
        "platforms_run": len(rep["replay"]["build"]["built"]),
        "failed": len(rep["replay"]["build"]["failed"]),
        "replay_s": round(first, 1),
        "cached_s": round(second, 1),
        "status": verdict["status"],
        "named": len(verdict["platforms"]),
        "hidden": str(hidden),
        "hidden_named": str(hidden) in verdict["platforms"],
        "same_verdict_cached": again["verdict"] == verdict,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet", "lm"])
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=5, help="served platforms drawn (the first is timed)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = one_model(name, args.n, args.seed, args.draws, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        f"{'model':<8} {'inputs':>6} {'platforms':>9} {'replay s':>9} {'cached s':>9}  verdict / served platform "
        "named / more draws identified"
    )
    for r in rows:
        print(
            f"{r['model']:<8} {r['inputs']:>6} {r['platforms_run']:>9} {r['replay_s']:>9} {r['cached_s']:>9}  "
            f"{r['status']} ({r['named']} platform(s)) / {'yes' if r['hidden_named'] else 'NO'} / "
            f"{r['more_draws_identified']}"
        )


if __name__ == "__main__":
    main()
