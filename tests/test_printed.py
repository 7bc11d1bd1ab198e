"""Numbers as services print them: a decimal read as its text stands for an interval, and a DB
platform is consistent when its values (after the service's own transformation, in float64 or
float32 arithmetic) fall inside every interval. Formats here are written by Python's and
numpy's own printers, none by this tool's writers."""

import json

import numpy as np
import pytest

from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import log_softmax
from hspi_onnx.inputs.probes import generate
from hspi_onnx.match.identify import CONSISTENT, match
from hspi_onnx.match.printed import FIXED, FLOAT32_REPR, FLOAT64_REPR, infer
from hspi_onnx.match.suspect import load_suspect

PLATFORMS = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
]


@pytest.mark.parametrize(
    "fmt, mode, what",
    [
        (lambda v: f"{v:.4g}", FIXED, None),
        (lambda v: f"{v:.3f}", FIXED, "3 decimals"),
        (lambda v: f"{v:.5e}", FIXED, "6 significant digits"),
        (lambda v: np.format_float_positional(np.float32(v), unique=True), FLOAT32_REPR, FLOAT32_REPR),
        (lambda v: repr(float(np.float32(v))), FLOAT64_REPR, FLOAT64_REPR),
    ],
)
def test_precision_is_inferred_and_holds_the_value(fmt, mode, what):
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    p = infer([fmt(v) for v in x.ravel()], x.shape)
    assert p.mode == mode and (what is None or p.description == what)
    assert ((x >= p.lo) & (x <= p.hi)).all()


@pytest.fixture(scope="module")
def env(tmp_path_factory, zoo):
    root = tmp_path_factory.mktemp("printed")
    model = zoo["digits"]
    probes = generate(model, n=24)
    db = ReferenceDB(root / "db", create=True)
    build(db, model, probes, PLATFORMS)
    g = load_groups(db)[0]
    true = next(p for p in g.platforms if "/fp16/" in p)
    return {"root": root, "db": db, "probes": probes, "logits": g.outputs[true].astype(np.float64), "true": true}


def _plain(env, name: str, form: str, queries: list[str]) -> str:
    path = env["root"] / name
    path.write_text(
        '{"format": "hspi-suspect/1", "probe_set": "%s", "form": "%s", "queries": [%s]}'
        % (env["probes"].sha256, form, ", ".join(queries))
    )
    return str(path)


def _top(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, kind="stable")[:k]


FORMATS = {  # name: (form, per-query JSON body from the true platform's logits row)
    "top5 logits, 4 significant digits": (
        "top5",
        lambda r: ("[" + ", ".join(f"{r[i]:.4g}" for i in _top(r, 5)) + "]", _top(r, 5)),
    ),
    "top1 logit, 3 decimals": ("top1", lambda r: (f"[{r[_top(r, 1)[0]]:.3f}]", _top(r, 1))),
    "softmax, 6 decimals (float64 arithmetic)": (
        "softmax",
        lambda r: ("[" + ", ".join(f"{v:.6f}" for v in np.exp(log_softmax(r))) + "]", None),
    ),
    "softmax, 4 significant digits, exponent form (float32 arithmetic)": (
        "softmax",
        lambda r: (
            "["
            + ", ".join(
                np.format_float_scientific(v, precision=3, unique=False)
                for v in (lambda e: e / e.sum(dtype=np.float32))(
                    np.exp(r.astype(np.float32) - r.astype(np.float32).max())
                )
            )
            + "]",
            None,
        ),
    ),
    "top3 log-probabilities, 5 decimals": (
        "logprobs",
        lambda r: ("[" + ", ".join(f"{log_softmax(r)[i]:.5f}" for i in _top(r, 3)) + "]", _top(r, 3)),
    ),
    "top3 logits (any k), 3 significant digits": (
        "top3",
        lambda r: ("[" + ", ".join(f"{r[i]:.3g}" for i in _top(r, 3)) + "]", _top(r, 3)),
    ),
    "top2 softmax probabilities, 4 decimals": (
        "softmax",
        lambda r: ("[" + ", ".join(f"{np.exp(log_softmax(r))[i]:.4f}" for i in _top(r, 2)) + "]", _top(r, 2)),
    ),
    "softmax in float32, float32 shortest repr (not fixed)": (
        "softmax",
        lambda r: (
            "["
            + ", ".join(
                np.format_float_positional(v, unique=True, trim="-")
                for v in (lambda e: e / e.sum(dtype=np.float32))(
                    np.exp(r.astype(np.float32) - r.astype(np.float32).max())
                )
            )
            + "]",
            None,
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_printed_formats_keep_the_true_platform(env, name):
    form, body = FORMATS[name]
    queries = []
    for pid, row in enumerate(env["logits"][:16]):
        values, index = body(row)
        q = {"probe_id": pid}
        text = json.dumps(q)[:-1] + f', "values": {values}'
        if index is not None:
            text += f', "index": {json.dumps([int(i) for i in index])}'
        queries.append(text + "}")
    s = load_suspect(_plain(env, "s.json", form, queries))
    assert s.printed is not None and (s.printed.mode == FIXED) == ("shortest repr" not in name)
    rep = match(s, env["db"])
    assert env["true"] in rep.evidence.exact.common, (name, rep.verdict.evidence)
    assert rep.evidence.exact.kind.startswith("printed values")
    if rep.verdict.status == CONSISTENT:
        assert env["true"] in rep.verdict.platforms


def test_fine_printing_rules_out_other_precisions(env):
    """Logits printed with 5 significant digits still tell fp16 from fp32 and int8."""
    queries = []
    for pid, row in enumerate(env["logits"][:16]):
        top = _top(row, 5)
        queries.append(
            json.dumps({"probe_id": pid, "index": [int(i) for i in top]})[:-1]
            + ', "values": ['
            + ", ".join(f"{row[i]:.5g}" for i in top)
            + "]}"
        )
    rep = match(load_suspect(_plain(env, "fine.json", "top5", queries)), env["db"])
    assert rep.verdict.status == CONSISTENT and rep.verdict.platforms == [env["true"]]


def test_fp16_overflow_to_inf_is_evidence(tmp_path):
    """An ONNX file whose outputs overflow float16 (a MatMul into the 10^5 range): PyTorch's fp16
    platform answers Infinity where the others do not. Printed as KServe JSON (Infinity) or as a
    top-1 list, the infinities are read, kept and single out the fp16 platform."""
    import onnx
    from onnx import TensorProto, helper

    from hspi_onnx.forms import degrade
    from hspi_onnx.inputs.model import open_model
    from hspi_onnx.match.identify import IDENTIFIED
    from hspi_onnx.match.suspect import write_kserve, write_plain

    w = np.full((4, 3), 30000.0, np.float32) * np.array([1.0, 0.5, 0.01], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "overflow.onnx")
    model = open_model(tmp_path / "overflow.onnx")
    probes = generate(model, n=8)
    db = ReferenceDB(tmp_path / "db", create=True)
    # ONNX Runtime's CPU provider computes this fp16 graph's MatMul in fp32 (no fp16 kernel): no overflow
    build(
        db,
        model,
        probes,
        [
            "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
            "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
            "pytorch/*/fp16/bs=1,layout=plain,mode=eager,src=onnx,threads=1",
        ],
    )
    g = load_groups(db)[0]
    fp16 = next(p for p in g.platforms if p.startswith("pytorch"))
    out = g.outputs[fp16]
    assert np.isinf(out).any() and all(np.isfinite(g.outputs[p]).all() for p in g.platforms if p != fp16)
    text = write_kserve(tmp_path / "k.jsonl", probes.sha256, "overflow", g.ids, out).read_text()
    assert "Infinity" in text
    rep = match(load_suspect(tmp_path / "k.jsonl"), db)
    assert (rep.verdict.status, rep.verdict.platforms) == (IDENTIFIED, [fp16])
    write_plain(tmp_path / "t.json", probes.sha256, None, "top1", g.ids, degrade(out, "top1"))
    rep = match(load_suspect(tmp_path / "t.json"), db)
    assert rep.verdict.status == CONSISTENT and rep.verdict.platforms == [fp16]


@pytest.mark.parametrize("fmt", ["{:.4f}", "{:.5g}"])
def test_kserve_json_printed_with_fixed_digits_is_matched_as_intervals(env, fmt):
    """A KServe v2 server that prints its FP32 tensors with fixed digits (the bits are lost):
    the raw outputs are compared as intervals, never 'unknown', and fine digits still separate
    fp16 from the other precisions."""
    from hspi_onnx.match.identify import IDENTIFIED

    lines = []
    for pid, row in enumerate(env["logits"][:12]):
        data = "[" + ", ".join(fmt.format(v) for v in row) + "]"
        lines.append(
            '{"model_name": "m", "id": "%d", "parameters": {"probe_set": "%s"}, "outputs": '
            '[{"name": "logits", "datatype": "FP32", "shape": [1, %d], "data": %s}]}'
            % (pid, env["probes"].sha256, len(row), data)
        )
    path = env["root"] / f"printed{len(fmt)}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    s = load_suspect(path)
    assert s.printed is not None and s.printed.mode == FIXED
    rep = match(s, env["db"])
    assert rep.verdict.status not in (IDENTIFIED, "unknown platform")
    assert rep.evidence.exact.kind.startswith("printed values")
    assert rep.verdict.status == CONSISTENT and rep.verdict.platforms == [env["true"]], rep.verdict.evidence


def test_decimal_budget_is_shared_across_json_lines():
    """Parsing stops once a file's decimal numbers exceed the budget (memory is bounded before
    the parser finishes), counted over every line of a JSON Lines file together."""
    from hspi_onnx.match.printed import loads

    budget = [4]
    assert loads("[1.5, 2.5]", budget) == [1.5, 2.5] and budget == [2]
    with pytest.raises(ValueError, match="decimal numbers"):
        loads("[1.5, 2.5, 3.5]", budget)
    assert loads("[1, 2, 3, 4, 5, 6]", [0]) == [1, 2, 3, 4, 5, 6]  # integers cost nothing
