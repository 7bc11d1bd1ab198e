"""ONNX's own backend node tests through this project's ONNX-to-PyTorch converter (issue 30).

Every node test case that ``onnx`` ships (``onnx.backend.test.case.node``: a one-node model, its
inputs and the expected outputs, generated in memory from the reference implementation; the
wheel carries no ``.pb`` data) is converted with :func:`hspi_onnx.graph.to_torch.convert` and run
on CPU in float32, the converter's compute dtype, and each output compared with the case's own
tolerance (``rtol``/``atol``, default 1e-3 / 1e-7; ``atol`` at least 4 units in the last place of
the output's largest magnitude, the rounding noise of its own scale: an exact 0 against a
reference's 1.9e-7 in an inverse DFT of values near 10 is not an error) after a cast to the
expected dtype. A case is

* ``pass``: every output has the expected shape and values;
* ``wrong``: it ran and some output differs (shape, dtype kind or values);
* ``refused``: the converter refused it cleanly (:class:`~hspi_onnx.errors.UnsupportedError`,
  naming the op, version or attribute);
* ``error``: any other exception, at conversion or at run time;
* ``not applicable``: inputs or outputs of a type the converter's tensors cannot hold here
  (strings, bfloat16, 8-, 4- and 2-bit floats and integers, sequences, optionals), set aside.

Results are JSON (``--json``); ``--write docs/adapters.md`` puts the per-operator table between
``<!-- conformance:begin -->`` and ``<!-- conformance:end -->``::

    python -m hspi_onnx.graph.conformance [--op Conv ...] [--json F] [--rewrites] [--compiled] [--write docs/adapters.md]

``--compiled`` runs every case again under torch.compile with inductor, as the PyTorch
adapter's ``mode=compile`` platforms run (:class:`~hspi_onnx.graph.torch_module.InductorModule`:
dynamo reset per case, graph breaks allowed, a case dynamo hands inductor no graph of is
refused), against the same tolerance; ``--rewrites`` each float32 case through the fp16, bf16
and fp64 graph rewrites (:func:`run_rewrite`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BEGIN = "<!-- conformance:begin -->"
END = "<!-- conformance:end -->"
STATUSES = ("pass", "wrong", "refused", "error", "not applicable")


@dataclass
class CaseResult:
    name: str
    op: str
    opset: int
    status: str
    reason: str = ""
    convert_s: float = 0.0
    run_s: float = 0.0


def collect(ops: list[str] | None = None) -> list:
    """ONNX's node test cases (all, or those of ``ops``), generated in memory."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases: list = [c for c in node.collect_testcases(None) if c.model is not None]
    for c in cases:
        if len(c.model.graph.node) == 1:
            _SINGLE[c.name] = c.model.graph.node[0].op_type
    wanted = set(ops or ())
    return [c for c in cases if not wanted or _op(c) in wanted]


def _op(case) -> str:
    """The operator a case tests: its node's; for an expanded case (the op's function body, many
    nodes: ``test_<name>_expanded``) the op of the one-node case it expands."""
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    base = case.name.split("_expanded")[0]
    return _SINGLE.get(base, nodes[-1].op_type if nodes else "?")


_SINGLE: dict[str, str] = {}  # one-node case name -> its op, filled by collect()


def _opset(case) -> int:
    return max((int(i.version) for i in case.model.opset_import if i.domain in ("", "ai.onnx")), default=0)


def _outside(case) -> str | None:
    """Why a case's inputs or outputs are outside what the converter's tensors hold, or None."""
    from onnx import TensorProto

    kept = {
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.INT8,
        TensorProto.INT16,
        TensorProto.INT32,
        TensorProto.INT64,
        TensorProto.UINT8,
        TensorProto.UINT16,
        TensorProto.UINT32,
        TensorProto.UINT64,
        TensorProto.BOOL,
    }
    for v in list(case.model.graph.input) + list(case.model.graph.output):
        t = v.type
        if not t.HasField("tensor_type"):
            return f"{v.name}: a {t.WhichOneof('value')} value, not a tensor"
        if t.tensor_type.elem_type not in kept:
            return f"{v.name}: {TensorProto.DataType.Name(t.tensor_type.elem_type)} data"
    return None


def _compare(got, want: np.ndarray, rtol: float, atol: float) -> str | None:
    g = got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = np.asarray(want)
    if g.shape != want.shape:
        return f"shape {g.shape}, expected {want.shape}"
    if want.dtype == bool or g.dtype == bool:
        return None if np.array_equal(g.astype(bool), want.astype(bool)) else "boolean values differ"
    if np.issubdtype(want.dtype, np.integer):
        if not np.issubdtype(g.dtype, np.integer) and not np.array_equal(g, np.round(g)):
            return f"dtype {g.dtype}, expected integers"
        return None if np.array_equal(g.astype(want.dtype), want) else "integer values differ"
    g = g.astype(want.dtype)
    finite = np.abs(want[np.isfinite(want)])
    if finite.size:  # rounding noise at the output's own scale: 4 units of its largest value
        atol = max(atol, 4 * float(np.spacing(finite.max().astype(want.dtype))))
    close = np.isclose(g, want, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    bad = np.argwhere(~close)[0]
    return f"{int((~close).sum())} of {close.size} values differ (at {tuple(int(i) for i in bad)}: {g[tuple(bad)]!r} vs {want[tuple(bad)]!r})"


def _array(x) -> np.ndarray:
    """A case's value as numpy (some cases store TensorProto messages)."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


def run_case(case, compiled: bool = False) -> CaseResult:
    """One case through the converter (float32), eager or (``compiled``) under torch.compile with
    inductor as the PyTorch adapter's ``mode=compile`` runs it; compiling counts in ``run_s``."""
    import torch

    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.graph.to_torch import convert

    result = CaseResult(case.name, _op(case), _opset(case), "pass")
    why = _outside(case)
    if why is not None:
        result.status, result.reason = "not applicable", why
        return result
    t0 = time.perf_counter()
    module: Callable
    try:
        module = convert(case.model)
    except UnsupportedError as exc:
        result.status, result.reason = "refused", str(exc)
        return result
    except Exception as exc:  # noqa: BLE001 - the point is to count every unexpected failure
        result.status, result.reason = "error", f"convert: {type(exc).__name__}: {str(exc)[:200]}"
        return result
    result.convert_s = time.perf_counter() - t0
    if compiled:
        from hspi_onnx.graph.torch_module import InductorModule

        module = InductorModule(module)
    from onnx.helper import tensor_dtype_to_np_dtype

    declared = [tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in case.model.graph.input]
    for inputs, outputs in case.data_sets:
        t1 = time.perf_counter()
        try:
            feeds = [torch.from_numpy(np.array(_array(x), dtype=d, copy=True)) for x, d in zip(inputs, declared)]
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = module(*feeds)
        except UnsupportedError as exc:
            result.status, result.reason = "refused", str(exc)
            return result
        except Exception as exc:  # noqa: BLE001
            where = "compile" if compiled and type(exc).__module__.startswith("torch._") else "run"
            result.status, result.reason = "error", f"{where}: {type(exc).__name__}: {_first_line(exc)}"
            return result
        result.run_s = max(result.run_s, time.perf_counter() - t1)
        if len(got) != len(outputs):
            result.status, result.reason = "wrong", f"{len(got)} outputs, expected {len(outputs)}"
            return result
        for k, (g, w) in enumerate(zip(got, outputs)):
            diff = _compare(g, _array(w), case.rtol, case.atol)
            if diff is not None:
                result.status, result.reason = "wrong", f"output {k}: {diff}"
                return result
    return result


REWRITES = ("fp16", "bf16", "fp64", "onnxref")
REWRITE_STATUSES = ("runs", "beyond tolerance", "invalid", "refused", "runtime lacks")
# a half graph's outputs against ONNX Runtime's own float32 run of the case's graph: within this
# share of the output's largest finite magnitude (relative and absolute), about 2.5 units of the
# format's rounding (2**-11 for fp16, 2**-8 for bf16) carried through a few ops
HALF_TOLERANCE = {"fp16": 1e-2, "bf16": 4e-2}


def _float32_only(case) -> bool:
    from onnx import TensorProto

    values = list(case.model.graph.input) + list(case.model.graph.output)
    return bool(values) and all(
        v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == TensorProto.FLOAT for v in values
    )


_LACKS = ("NOT_IMPLEMENTED", "Could not find an implementation", "is not a registered function/op")


def _runs_original(case, rewrite: str, feeds: dict, outputs) -> bool:
    """Whether the rewrite's runtime (ONNX Runtime for fp16 and bf16, the reference evaluator
    for fp64) runs the case's own float32 graph, and the evaluator rightly: when it does not, a
    rewrite of it failing there says nothing of the rewrite."""
    try:
        if rewrite == "fp64":
            from hspi_onnx.graph.refops import reference_evaluator

            got = reference_evaluator(case.model).run(None, {k: v.copy() for k, v in feeds.items()})
            return all(_compare(np.asarray(g), _array(w), case.rtol, case.atol) is None for g, w in zip(got, outputs))
        _ort_run(case.model, feeds)
    except Exception:  # noqa: BLE001
        return False
    return True


def _ort_run(model, feeds: dict) -> list:
    """``model`` run once by ONNX Runtime on CPU, on copies of ``feeds``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.copy() for k, v in feeds.items()})


def _feeds(model, inputs) -> dict[str, np.ndarray]:
    """A data set's inputs by the graph's input names, as float32 copies of the case's arrays."""
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    return {n: np.array(_array(x), dtype=np.float32, copy=True) for n, x in zip(names, inputs)}


def run_rewrite(case, rewrite: str) -> tuple[str, str]:
    """(status, reason) of one float32 case through one of this project's graph rewrites: the
    fp16 and bf16 graphs ONNX Runtime's and TensorRT's half platforms run (graph/lowprec.py),
    checked (onnx's full checker) and run by ONNX Runtime; the float64 graph of the reference
    (graph/float64.py), run by the reference evaluator as the features use it and compared with
    the case's expected outputs; ``onnxref``, no rewrite: the float32 graph through the reference
    evaluator with this project's op overrides (graph/refops.py), as the onnxref adapter runs it."""
    import onnx

    from hspi_onnx.errors import UnsupportedError

    if rewrite == "onnxref":  # no rewrite: the float32 graph as the onnxref adapter's fp32 platforms run it
        for inputs, outputs in case.data_sets:
            if not _runs_original(case, "fp64", _feeds(case.model, inputs), outputs):
                return "runtime lacks", "the reference evaluator fails or errs on the float32 graph"
        return "runs", ""
    try:
        if rewrite == "fp64":
            from hspi_onnx.graph.float64 import to_float64
            from hspi_onnx.graph.refops import reference_evaluator

            wide = to_float64(case.model)
        else:
            from hspi_onnx.graph.lowprec import to_half

            wide = to_half(case.model, rewrite)
    except UnsupportedError as exc:
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001
        return "invalid", f"rewrite: {type(exc).__name__}: {str(exc)[:160]}"
    try:
        onnx.checker.check_model(wide, full_check=True)
    except Exception as exc:  # noqa: BLE001
        return "invalid", f"checker: {str(exc).splitlines()[0][:160]}"
    for inputs, outputs in case.data_sets:
        feeds = _feeds(wide, inputs)
        try:
            if rewrite == "fp64":
                got = reference_evaluator(wide).run(None, {k: v.astype(np.float64) for k, v in feeds.items()})
            else:
                got = _ort_run(wide, feeds)
        except Exception as exc:  # noqa: BLE001
            text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            lacks = any(s in str(exc) for s in _LACKS) or not _runs_original(case, rewrite, feeds, outputs)
            return ("runtime lacks" if lacks else "invalid"), text
        if rewrite == "fp64":
            for k, (g, w) in enumerate(zip(got, outputs)):
                diff = _compare(np.asarray(g), _array(w), case.rtol, case.atol)
                if diff is not None:
                    status = "invalid" if _runs_original(case, rewrite, feeds, outputs) else "runtime lacks"
                    return status, f"output {k}: {diff}"
        else:
            half = list(got)
            why = _off(half, [_array(w) for w in outputs], HALF_TOLERANCE[rewrite])
            if why and _off(half, _ort_float32(case, feeds), HALF_TOLERANCE[rewrite]):
                return "beyond tolerance", why
    return "runs", ""


def _ort_float32(case, feeds: dict) -> list | None:
    """ONNX Runtime's own float32 outputs of the case's graph (None when it cannot run it)."""
    try:
        return _ort_run(case.model, feeds)
    except Exception:  # noqa: BLE001
        return None


def _off(got: list, want: list | None, tol: float) -> str:
    """Where ``got`` leaves ``tol`` of ``want`` (relative, and absolute at that share of the
    output's largest finite magnitude): "" when it does not; "no float32 run" when there is
    nothing to compare with. A half graph is beyond its tolerance only when it is off both the
    case's expected outputs and ONNX Runtime's float32 run of the same graph, so neither the
    runtime's own reading of an op (its align_corners downsampling) nor a float32 kernel that
    departs from the spec (its training-mode running mean) counts against the rewrite."""
    if want is None:
        return "no float32 run"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            return f"output {k}: shape {g.shape}, float32 gives {w.shape}"
        finite = np.abs(w[np.isfinite(w)])
        scale = float(finite.max()) if finite.size else 1.0
        close = np.isclose(g, w, rtol=tol, atol=tol * scale, equal_nan=True)
        if not close.all():
            at = tuple(int(i) for i in np.argwhere(~close)[0])
            return f"output {k}: {int((~close).sum())} of {close.size} values off (at {at}: {g[at]!r} vs {w[at]!r})"
    return ""


REWRITES_BEGIN, REWRITES_END = "<!-- rewrites:begin -->", "<!-- rewrites:end -->"


def rewrite_table(cases) -> str:
    """The markdown of every float32 case through each rewrite: how many run (within the
    precision's tolerance), run beyond it, are invalid, are refused, or lack an ONNX Runtime
    kernel, with the commonest reasons."""
    import onnx
    import onnxruntime

    cases = [c for c in cases if _float32_only(c)]
    rows = [f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}:", ""]
    rows.append(
        "| rewrite | cases | runs | beyond the precision's tolerance | invalid | refused | "
        "runtime lacks it (fails the float32 graph too) | commonest reasons not running |"
    )
    rows.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for w in REWRITES:
        counts = dict.fromkeys(REWRITE_STATUSES, 0)
        reasons: dict[str, int] = {}
        for c in cases:
            status, why = run_rewrite(c, w)
            counts[status] += 1
            if status != "runs":
                key = f"{status}: {why[:70]}".replace("|", "\\|")
                reasons[key] = reasons.get(key, 0) + 1
        top = "; ".join(f"{k} ({v})" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        rows.append(
            f"| {w} | {len(cases)} | {counts['runs']} | {counts['beyond tolerance']} | {counts['invalid']} | "
            f"{counts['refused']} | "
            f"{counts['runtime lacks']} | {top} |"
        )
    return "\n".join(rows) + "\n"


def _between(text: str, begin: str, end: str, body: str) -> str:
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"expected {begin} followed by {end}")
    return text[: start + len(begin)] + "\n" + body + text[stop:]


def run_all(cases, on_case=lambda r: None, compiled: bool = False) -> list[CaseResult]:
    out = []
    for case in cases:
        r = run_case(case, compiled)
        on_case(r)
        out.append(r)
    return out


def _run_names(names: list[str], compiled: bool) -> list[dict]:
    """In a child process: the named cases (by name, as cases do not pickle)."""
    import logging

    import torch

    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # graph-break chatter
    wanted = set(names)
    return [asdict(run_case(c, compiled)) for c in collect() if c.name in wanted]


CHUNK = 64


def run_isolated(cases, compiled: bool = True, on_chunk=lambda done: None) -> list[CaseResult]:
    """Every case in child processes, ``CHUNK`` at a time: a case that kills its process (a
    native crash in generated code) is an ``error`` naming the crash, and the others still run.
    A chunk whose process dies runs again one case per process to find which."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    by_name = {c.name: c for c in cases}
    names = list(by_name)
    done: dict[str, CaseResult] = {}

    def attempt(chunk: list[str]) -> list[dict] | None:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                return pool.submit(_run_names, chunk, compiled).result()
            except BrokenProcessPool:
                return None

    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        got = attempt(chunk)
        if got is None:
            got = []
            for name in chunk:
                one = attempt([name])
                if one is None:
                    c = by_name[name]
                    one = [asdict(CaseResult(name, _op(c), _opset(c), "error", "crashed the process running it"))]
                got += one
        for d in got:
            done[d["name"]] = CaseResult(**d)
        on_chunk(len(done))
    return [done[n] for n in names]


def summary(results: list[CaseResult]) -> dict:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    applicable = len(results) - counts["not applicable"]
    per_op: dict[str, dict[str, int]] = {}
    for r in results:
        per_op.setdefault(r.op, dict.fromkeys(STATUSES, 0))[r.status] += 1
    ops_applicable = [op for op, c in per_op.items() if sum(c.values()) > c["not applicable"]]
    return {
        "cases": len(results),
        "applicable": applicable,
        **counts,
        "pass_rate": counts["pass"] / applicable if applicable else None,
        "operators": len(ops_applicable),
        "operators_all_pass": sum(
            1 for op in ops_applicable if per_op[op]["pass"] == sum(per_op[op].values()) - per_op[op]["not applicable"]
        ),
        "per_op": per_op,
    }


def table(results: list[CaseResult]) -> str:
    """The markdown: the totals, then one row per operator (most cases not passing first)."""
    s = summary(results)
    import onnx
    import torch

    lines = [
        f"onnx {onnx.__version__}, torch {torch.__version__.split('+')[0]}: "
        f"{s['cases']} node test cases of onnx's backend suite; {s['not applicable']} set aside (types the "
        f"converter's tensors cannot hold); of the {s['applicable']} that apply: **{s['pass']} pass "
        f"({100 * (s['pass_rate'] or 0):.1f} %)**, {s['refused']} refused cleanly, {s['error']} unexpected "
        f"errors, {s['wrong']} wrong. {s['operators_all_pass']} of {s['operators']} operators pass every case.",
        "",
        "| Op | opsets | cases | pass | refused | error | wrong | set aside | first reason not passing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    opsets: dict[str, set[int]] = {}
    for r in results:
        opsets.setdefault(r.op, set()).add(r.opset)
    reasons: dict[str, str] = {}
    for r in results:
        if r.status in ("wrong", "error", "refused") and r.op not in reasons:
            reasons[r.op] = f"{r.name}: {r.reason}"
    per_op = s["per_op"]

    def failing(op: str) -> int:
        c = per_op[op]
        return c["refused"] + c["error"] + c["wrong"]

    for op in sorted(per_op, key=lambda o: (-failing(o), o.lower())):
        c = per_op[op]
        why = reasons.get(op, "").replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(
            f"| {op} | {', '.join(map(str, sorted(opsets[op])))} | {sum(c.values())} | {c['pass']} | {c['refused']} | {c['error']} | {c['wrong']} | "
            f"{c['not applicable']} | {why} |"
        )
    return "\n".join(lines) + "\n"


COMPILED_BEGIN, COMPILED_END = "<!-- compiled:begin -->", "<!-- compiled:end -->"


def compiled_table(eager: list[CaseResult], compiled: list[CaseResult]) -> str:
    """The markdown of the converter under torch.compile (inductor) against eager: totals, the
    time to compile and run each case once, and one row per operator where any case that
    passes eager does not pass compiled."""
    import torch

    s = summary(compiled)
    eager_pass = {r.name for r in eager if r.status == "pass"}
    lost = [r for r in compiled if r.name in eager_pass and r.status != "pass"]
    ran = [r.run_s for r in compiled if r.status in ("pass", "wrong")]
    first = np.array(ran) if ran else np.zeros(1)
    lines = [
        f"torch {torch.__version__.split('+')[0]}, inductor on CPU, one dynamo reset per case: of the {len(eager_pass)} "
        f"cases that pass eager, **{len(eager_pass) - len(lost)} pass compiled**; {s['wrong']} wrong, {s['error']} "
        f"unexpected errors, {sum(r.status == 'refused' for r in lost)} refused at compile time. Compiling and "
        f"running each case once: {np.median(first):.2f} s median, {first.max():.1f} s max.",
        "",
    ]
    if lost:
        lines += ["| Op | case | compiled | reason |", "| --- | --- | --- | --- |"]
        for r in sorted(lost, key=lambda r: (r.op.lower(), r.name)):
            why = r.reason.replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(f"| {r.op} | {r.name} | {r.status} | {why} |")
    return "\n".join(lines) + "\n"


def updated(text: str, results: list[CaseResult]) -> str:
    return _between(text, BEGIN, END, table(results))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", action="append", help="only this operator's cases (repeatable)")
    ap.add_argument("--json", type=Path, help="write every case's result here")
    ap.add_argument("--write", type=Path, help="rewrite the table in this markdown file")
    ap.add_argument(
        "--rewrites", action="store_true", help="also each float32 case through the fp16, bf16 and fp64 graph rewrites"
    )
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="also every case under torch.compile with inductor, in child processes (about 1 s a case on 2 cores)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = collect(args.op)
    results = run_all(cases)
    s = summary(results)
    compiled = None
    if args.compiled:
        compiled = run_isolated(
            cases, on_chunk=lambda done: print(f"compiled: {done} of {len(cases)} cases", file=sys.stderr, flush=True)
        )
    if args.json:
        doc: dict = {"summary": {k: v for k, v in s.items() if k != "per_op"}, "cases": [asdict(r) for r in results]}
        if compiled is not None:
            doc["compiled"] = [asdict(r) for r in compiled]
        args.json.write_text(json.dumps(doc, indent=1))
    rewrites = rewrite_table(cases) if args.rewrites else None
    if rewrites:
        print(rewrites)
    if compiled is not None:
        print(compiled_table(results, compiled))
    if args.write:
        text = updated(args.write.read_text(), results)
        if rewrites:
            text = _between(text, REWRITES_BEGIN, REWRITES_END, rewrites)
        if compiled is not None:
            text = _between(text, COMPILED_BEGIN, COMPILED_END, compiled_table(results, compiled))
        args.write.write_text(text)
    print(table(results).split("\n")[0])
    ran = [r for r in results if r.status in ("pass", "wrong")]
    if ran:
        conv = np.array([r.convert_s for r in ran]) * 1e3
        first = np.array([r.run_s for r in ran]) * 1e3
        print(
            f"conversion {np.median(conv):.2f} ms median, {conv.max():.1f} ms max; first inference "
            f"{np.median(first):.2f} ms median, {first.max():.1f} ms max ({len(ran)} cases that ran)"
        )
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
