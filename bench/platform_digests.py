"""Digests of every selected platform's outputs, to compare two installs (builds, releases)
bit for bit: the label minus its version is the key, so the same setting lines up across them.

    python bench/platform_digests.py write OUT.json [-p 'onnxruntime/*'] [-n 32]
    python bench/platform_digests.py compare A.json B.json

Run `write` once in each environment (e.g. a venv with `onnxruntime`, one with
`onnxruntime-gpu`), then `compare` prints how many platforms are bit-identical and how many
distinct output sets each side has. Models: resnet and lm.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys


def write(out: str, patterns: list[str], n: int) -> None:
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.run.adapter import selected_variants
    from hspi_onnx.run.runner import Runner

    digests, versions = {}, set()
    for name in ("resnet", "lm"):
        info = resolve_model(name)
        probes = generate(info, n=n)
        for adapter, plat in selected_variants(info, probes.kind, patterns):
            with Runner() as runner:
                result = runner.run(adapter, info, plat, probes)
            runtime, rest = str(plat).split("/", 1)
            versions.add(runtime)
            digests[f"{name} {plat.runtime}/{rest}"] = hashlib.sha256(
                b"".join(v.tobytes() for v in result.outputs.values())
            ).hexdigest()
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"runtimes": sorted(versions), "n": n, "digests": digests}, f, indent=1, sort_keys=True)
    print(f"{len(digests)} platforms ({', '.join(sorted(versions))}), {n} probes per model -> {out}")


def compare(a_path: str, b_path: str) -> None:
    a, b = (json.load(open(p, encoding="utf-8")) for p in (a_path, b_path))
    da, db = a["digests"], b["digests"]
    common = sorted(set(da) & set(db))
    same = [k for k in common if da[k] == db[k]]
    print(f"{a_path}: {', '.join(a['runtimes'])}, {len(da)} platforms, {len(set(da.values()))} distinct output sets")
    print(f"{b_path}: {', '.join(b['runtimes'])}, {len(db)} platforms, {len(set(db.values()))} distinct output sets")
    print(f"in both: {len(common)}; bit-identical: {len(same)}")
    differ = collections.Counter(k.split("/")[0] + " " + k.split("/")[2] for k in common if da[k] != db[k])
    for key, count in sorted(differ.items()):
        print(f"  differ: {key}: {count}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out")
    w.add_argument("-p", "--platforms", action="append", default=None, help="label glob (repeatable)")
    w.add_argument("-n", type=int, default=32, help="probes per model")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "write":
        write(args.out, args.platforms or ["onnxruntime/*"], args.n)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
