"""How stable border probes stay across runtime versions (issue 16, point 4).

    python bench/border_versions.py --workdir DIR [--ort 1.28.0] [--model digits]

``DIR`` holds what ``bench/border.py --workdir DIR`` left: ``db`` (built with this project's
ONNX Runtime on noise probes and on the border set) and ``border.npz``. A scratch virtual
environment gets another ONNX Runtime version (pip, from the package index) and sees every
other package through this project's environment; in it, the ONNX Runtime platforms are built
on both probe sets into a second DB. Printed, per platform present in both versions (same
device, precision and knobs):

* whether its outputs are bit-identical across the versions on the noise probes and on the
  border probes;
* the share of border probes whose top-1 label is the same in both versions;
* whether the border set still separates the other version's ONNX Runtime classes.
"""

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import degrade
from hspi_onnx.labels import Platform


def scratch_venv(root: Path, ort: str) -> Path:
    py = root / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", f"onnxruntime=={ort}"], check=True)
        site = subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours = sysconfig.get_paths()["purelib"]  # after the scratch packages: its onnxruntime wins
        Path(site, "hspi_main_env.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return py


def key(label: str) -> str:
    p = Platform.parse(label)
    return f"{p.device}/{p.precision}/{p.knob_string()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--ort", default="1.28.0")
    ap.add_argument("--model", default="digits")
    args = ap.parse_args()
    work = args.workdir
    py = scratch_venv(work / f"venv-ort{args.ort}", args.ort)
    other = work / f"db-ort{args.ort}"
    version = subprocess.run(
        [str(py), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = ReferenceDB(work / "db")
    names = {g.probes_name: g for g in load_groups(ours)}
    noise_name = next(n for n in names if not n.startswith("border"))
    noise_n, noise_seed = ours.manifest().probe_sets[names[noise_name].probes_sha256].n, 0
    for probes in (["-n", str(noise_n), "--seed", str(noise_seed)], ["--probes", str(work / "border.npz")]):
        subprocess.run(
            [
                str(py),
                "-m",
                "hspi_onnx.cli",
                "db",
                "build",
                args.model,
                "--db",
                str(other),
                "-q",
                "-p",
                "onnxruntime/*",
                *probes,
            ],
            check=True,
        )
    theirs = {g.probes_name: g for g in load_groups(ReferenceDB(other))}
    rows = []
    border_name = next(n for n in names if n.startswith("border"))
    a_n, b_n, a_b, b_b = names[noise_name], theirs[noise_name], names[border_name], theirs[border_name]
    mine = {key(p): p for p in a_b.platforms if p.startswith("onnxruntime@")}
    for p2 in b_b.platforms:
        p1 = mine.get(key(p2))
        if p1 is None:
            continue
        l1 = degrade(a_b.outputs[p1], "argmax").index[:, 0]
        l2 = degrade(b_b.outputs[p2], "argmax").index[:, 0]
        rows.append(
            {
                "platform": key(p2),
                "noise_identical": bool(np.array_equal(a_n.outputs[p1].view(np.uint8), b_n.outputs[p2].view(np.uint8))),
                "border_identical": bool(
                    np.array_equal(a_b.outputs[p1].view(np.uint8), b_b.outputs[p2].view(np.uint8))
                ),
                "same_labels": float((l1 == l2).mean()),
            }
        )
    classes2 = b_n.classes()
    labels2 = {p: tuple(degrade(b_b.outputs[p], "argmax").index[:, 0]) for p in b_b.platforms}
    keys2 = sorted(set(classes2.values()))
    sep = sum(
        1
        for i, c in enumerate(keys2)
        for d in keys2[i + 1 :]
        if all(labels2[p] != labels2[q] for p in c.split(" | ") for q in d.split(" | "))
    )
    pairs = len(keys2) * (len(keys2) - 1) // 2
    summary = {
        "ours": next(iter(ours.manifest().runs.values())).versions.get("onnxruntime"),
        "other": version,
        "platforms_compared": len(rows),
        "noise_identical": sum(r["noise_identical"] for r in rows),
        "border_identical": sum(r["border_identical"] for r in rows),
        "mean_same_labels": round(float(np.mean([r["same_labels"] for r in rows])), 4) if rows else None,
        "other_classes": len(keys2),
        "other_pairs_separated": f"{sep}/{pairs}",
    }
    for r in rows:
        print(json.dumps(r))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
