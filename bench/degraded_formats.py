"""How much identity survives the way services print numbers (issue 15, point 5).

For each model (zoo models, and one ONNX file from outside the zoo: the corpus' two-output MLP
exported from tests/corpus.py), a DB over a set of CPU platforms is built; then for each
realistic printing format and for every DB platform as the served one, its outputs on 16
probes are printed the way a service would (Python's and numpy's own formatters), read back by
`load_suspect`, and matched. Printed per format: in how many cases the true platform is called
consistent, how many equivalence classes remain on average (of the DB's; the others are ruled
out), and the bits each printed query carries (median over queries of the bits its numbers
leave together).

    python bench/degraded_formats.py [--models digits lm twohead] [-n 32] [--platforms GLOB ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hspi_onnx.db.build import build  # noqa: E402
from hspi_onnx.db.dataset import load_groups  # noqa: E402
from hspi_onnx.db.store import ReferenceDB  # noqa: E402
from hspi_onnx.forms import log_softmax  # noqa: E402
from hspi_onnx.inputs.model import open_model, resolve_model  # noqa: E402
from hspi_onnx.inputs.probes import generate  # noqa: E402
from hspi_onnx.match.identify import match  # noqa: E402
from hspi_onnx.match.suspect import load_suspect  # noqa: E402

DEFAULT_PLATFORMS = [
    "onnxruntime/*/*/bs=1,*threads=1",
    "pytorch/*/*/bs=1,*threads=1",
    "openvino/*/*/bs=1,*",
    "onnxref/*/fp32/*",
]
QUERIES = 16


def _top(r, k):
    return np.argsort(-r, kind="stable")[:k]


def _sm64(r):
    return np.exp(log_softmax(r))


def _sm32(r):
    x = r.astype(np.float32)
    e = np.exp(x - x.max())
    return e / e.sum(dtype=np.float32)


def _lp32(r):
    x = r.astype(np.float32)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum(dtype=np.float32)))


# name: (form, values(row) -> list of printed numbers, index(row) -> list | None)
FORMATS = {
    "top5 logits, %.4g": ("top5", lambda r: [f"{r[i]:.4g}" for i in _top(r, 5)], lambda r: _top(r, 5)),
    "top1 logit, %.3f": ("top1", lambda r: [f"{r[_top(r, 1)[0]]:.3f}"], lambda r: _top(r, 1)),
    "top5 logits, %.6e": ("top5", lambda r: [f"{r[i]:.6e}" for i in _top(r, 5)], lambda r: _top(r, 5)),
    "top5 logits, float32 shortest repr": (
        "top5",
        lambda r: [np.format_float_positional(np.float32(r[i]), unique=True, trim="-") for i in _top(r, 5)],
        lambda r: _top(r, 5),
    ),
    "top1 logit, float64 repr of float32": (
        "top1",
        lambda r: [repr(float(np.float32(r[_top(r, 1)[0]])))],
        lambda r: _top(r, 1),
    ),
    "all logits, %.5g": ("round5", lambda r: [f"{v:.5g}" for v in r], lambda r: None),
    "all logits, %.2f": ("round3", lambda r: [f"{v:.2f}" for v in r], lambda r: None),
    "softmax, %.6f (float64 arithmetic)": ("softmax", lambda r: [f"{v:.6f}" for v in _sm64(r)], lambda r: None),
    "softmax, %.4e (float32 arithmetic)": ("softmax", lambda r: [f"{v:.4e}" for v in _sm32(r)], lambda r: None),
    "softmax, %.3g": ("softmax", lambda r: [f"{v:.3g}" for v in _sm64(r)], lambda r: None),
    "top5 log-probabilities, %.4f (LLM API)": (
        "logprobs",
        lambda r: [f"{log_softmax(r)[i]:.4f}" for i in _top(r, 5)],
        lambda r: _top(r, 5),
    ),
    "top3 log-probabilities, %.6g (float32 arithmetic)": (
        "logprobs",
        lambda r: [f"{_lp32(r)[i]:.6g}" for i in _top(r, 3)],
        lambda r: _top(r, 3),
    ),
    "top3 logits, %.3g": ("top3", lambda r: [f"{r[i]:.3g}" for i in _top(r, 3)], lambda r: _top(r, 3)),
    "top2 softmax probabilities, %.4f": (
        "softmax",
        lambda r: [f"{_sm64(r)[i]:.4f}" for i in _top(r, 2)],
        lambda r: _top(r, 2),
    ),
    "softmax in float32, float32 shortest repr": (
        "softmax",
        lambda r: [np.format_float_positional(v, unique=True, trim="-") for v in _sm32(r)],
        lambda r: None,
    ),
    "KServe JSON, raw FP32 data at %.4f": ("kserve", lambda r: [f"{v:.4f}" for v in r], lambda r: None),
}


def _model(name: str, root: Path):
    if name == "twohead":
        import corpus

        return open_model(corpus.export("twohead", root / "twohead.onnx"))
    return resolve_model(name)


def _write(path: Path, probes: str, form: str, rows: np.ndarray, values, index) -> None:
    if form == "kserve":  # KServe v2 responses, one per probe, the server printing its floats
        path.write_text(
            "\n".join(
                '{"model_name": "m", "id": "%d", "parameters": {"probe_set": "%s"}, "outputs": [{"name": "", '
                '"datatype": "FP32", "shape": [1, %d], "data": [%s]}]}' % (pid, probes, len(r), ", ".join(values(r)))
                for pid, r in enumerate(rows)
            )
            + "\n"
        )
        return
    queries = []
    for pid, r in enumerate(rows):
        q = '{"probe_id": %d, "values": [%s]' % (pid, ", ".join(values(r)))
        idx = index(r)
        if idx is not None:
            q += ', "index": %s' % json.dumps([int(i) for i in idx])
        queries.append(q + "}")
    path.write_text(
        '{"format": "hspi-suspect/1", "probe_set": "%s", "form": "%s", "queries": [%s]}'
        % (probes, form, ", ".join(queries))
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits", "lm", "twohead"])
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--platforms", nargs="+", default=DEFAULT_PLATFORMS)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models:
            model = _model(name, root)
            probes = generate(model, n=args.n)
            db = ReferenceDB(root / f"db-{name}", create=True)
            t0 = time.perf_counter()
            summary = build(db, model, probes, args.platforms)
            g = load_groups(db)[0]  # the model's first output
            classes = g.classes()
            n_classes = len(set(classes.values()))
            print(
                f"{name}: {len(summary.built)} platforms, {n_classes} classes, output {g.output_name} "
                f"{list(g.shapes[0]) if hasattr(g, 'shapes') else ''}, DB {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            width = int(np.prod(g.outputs[g.platforms[0]].shape[1:]))
            for fname, (form, values, index) in FORMATS.items():
                needs = index(np.arange(width, dtype=np.float64))
                if needs is not None and (len(needs) > width or (form == "top5" and width < 5)):
                    rows.append((name, fname, 0, 0, 0.0, n_classes, float("nan"), f"n/a: {width} outputs"))
                    continue
                hits = remain = bits = cases = 0
                for label in g.platforms:
                    out = g.outputs[label].reshape(len(g.ids), -1).astype(np.float64)[:QUERIES]
                    path = root / "s.json"
                    _write(path, probes.sha256, form, out, values, index)
                    s = load_suspect(path)
                    rep = match(s, db)
                    common = rep.evidence.exact.common
                    hits += label in common
                    remain += len({classes[p] for p in common})
                    per_query = s.printed.query_bits if s.printed else float("nan")
                    bits += per_query
                    cases += 1
                rows.append(
                    (
                        name,
                        fname,
                        hits,
                        cases,
                        remain / cases,
                        n_classes,
                        bits / cases,
                        s.printed.description if s.printed else "-",
                    )
                )
    print()
    print("| model | format | read as | true platform consistent | classes left (of DB) | bits / query |")
    print("|---|---|---|---:|---:|---:|")
    for name, fname, hits, cases, remain, n_classes, bits, how in rows:
        if not cases:
            print(f"| {name} | {fname} | {how} | - | - | - |")
            continue
        print(f"| {name} | {fname} | {how} | {hits}/{cases} | {remain:.1f} of {n_classes} | {bits:.0f} |")


if __name__ == "__main__":
    main()
