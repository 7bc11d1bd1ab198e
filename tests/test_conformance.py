"""ONNX's own backend node tests through the ONNX-to-PyTorch converter (issue 30): the whole
suite (about 6 s), no wrong answer, no unexpected error, every refusal a reason, and the table in
docs/adapters.md as the suite gives it today."""

from pathlib import Path

import pytest

pytest.importorskip("torch")

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"


@pytest.fixture(scope="module")
def results():
    from hspi_onnx.graph.conformance import collect, run_all

    return run_all(collect())


def test_no_wrong_answer_and_no_unexpected_error(results):
    bad = [f"{r.name} ({r.status}): {r.reason}" for r in results if r.status in ("wrong", "error")]
    assert not bad, "\n".join(bad[:20])


def test_every_refusal_names_what_it_refuses(results):
    refused = [r for r in results if r.status == "refused"]
    assert refused and all(len(r.reason) > 10 for r in refused)
    assert sum(r.status == "pass" for r in results) > 900  # the suite really ran


def test_the_docs_table_is_the_suite_s(results):
    import onnx
    import torch

    from hspi_onnx.graph.conformance import BEGIN, END, table

    text = DOC.read_text()
    recorded = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    made_with = f"onnx {onnx.__version__}, torch {torch.__version__.split('+')[0]}:"
    if not recorded.startswith(made_with):
        pytest.skip(f"the table was made with other versions than {made_with}")
    assert recorded == table(results).strip(), "run: python -m hspi_onnx.graph.conformance --write docs/adapters.md"


@pytest.mark.slow
def test_the_docs_rewrite_table_is_the_suite_s():
    """The fp16, bf16 and fp64 rewrites of every float32 case, as docs/adapters.md records them
    (the fp64 one never runs wrong: a graph it cannot widen is refused, not miscomputed)."""
    import onnx
    import onnxruntime

    from hspi_onnx.graph.conformance import REWRITES_BEGIN, REWRITES_END, collect, rewrite_table

    made = rewrite_table(collect())
    assert "| fp64 |" in made
    for row in [ln for ln in made.splitlines() if ln.startswith(("| fp16 |", "| bf16 |", "| fp64 |"))]:
        assert row.split(" | ")[4] == "0", f"a rewrite made an invalid graph: {row}"
    text = DOC.read_text()
    recorded = text[text.index(REWRITES_BEGIN) + len(REWRITES_BEGIN) : text.index(REWRITES_END)].strip()
    if not recorded.startswith(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}:"):
        pytest.skip("the table was made with other versions of onnx or onnxruntime")
    assert recorded == made.strip(), "run: python -m hspi_onnx.graph.conformance --rewrites --write docs/adapters.md"


REWRITE_CASES = {
    # ONNX Runtime's float16 converter leaves Constant's value_float in float32, types
    # LayerNormalization's Mean as half and imports no default opset for its Casts in an
    # ai.onnx.ml graph: each is mended before or after it runs
    ("test_elu_expanded_ver18", "fp16"): "runs",
    ("test_layer_normalization_2d_axis0", "fp16"): "runs",
    ("test_ai_onnx_ml_binarizer", "fp16"): "runs",
    ("test_mvn", "fp16"): "refused",
    ("test_flexattention_score_mod", "fp16"): "refused",
    ("test_onehot_with_axis", "bf16"): "refused",  # OneHot admits float16 indices, not bfloat16
    # a Scan body reading ConstantOfShape's float32 default zero, random draws; training-mode
    # BatchNormalization updates its running-mean input in place in the evaluator: every run
    # gets copies of the case's inputs
    ("test_linear_attention_linear_expanded", "fp64"): "runs",
    ("test_bernoulli_seed", "fp64"): "refused",
    ("test_batchnorm_example_training_mode", "fp64"): "runs",
    ("test_batchnorm_example_training_mode", "onnxref"): "runs",
    ("test_range_float_type_positive_delta_expanded", "fp64"): "runtime lacks",  # the evaluator errs on fp32 too
    ("test_conv_with_strides_padding", "fp64"): "runs",
    ("test_conv_with_strides_padding", "onnxref"): "runs",  # the float32 graph as the onnxref adapter runs it
    ("test_scan_sum", "onnxref"): "runtime lacks",
}


def test_rewrites_of_cases_they_once_broke():
    from hspi_onnx.graph.conformance import collect, run_rewrite

    cases = {c.name: c for c in collect() if c.name in {name for name, _ in REWRITE_CASES}}
    got = {(name, w): run_rewrite(cases[name], w) for name, w in REWRITE_CASES}
    again = {(name, w): run_rewrite(cases[name], w) for name, w in REWRITE_CASES}  # no state kept
    assert again == got
    assert {k: s for k, (s, _) in got.items()} == REWRITE_CASES, got
    assert all(why for s, why in got.values() if s != "runs")


COMPILED_SAMPLE = [
    "test_conv_with_strides_padding",
    "test_matmul_3d",
    "test_softmax_axis_1",
    "test_layer_normalization_3d_axis1_epsilon",
    "test_resize_upsample_scales_linear",
    "test_attention_4d_gqa",
    "test_top_k",
    "test_nonmaxsuppression_two_batches",
    "test_if",
    "test_cumsum_1d",
    "test_gru_defaults",
    "test_einsum_batch_matmul",
    "test_col2im",  # inductor's fold is wrong on it: the converter keeps fold out of compiled graphs
    "test_mod_float_edge_cases_fmod_0_float32",  # inductor's remainder gives nan for x % inf
]


@pytest.mark.slow
def test_compiled_mode_on_a_sample():
    """The converter under torch.compile (inductor), one dynamo reset per case, as mode=compile
    platforms run: no wrong answer, no unexpected error, inductor really compiled each one."""
    from hspi_onnx.graph.conformance import collect, run_case
    from hspi_onnx.graph.torch_module import compile_unavailable

    if compile_unavailable():
        pytest.skip(compile_unavailable())
    cases = [c for c in collect() if c.name in COMPILED_SAMPLE]
    assert len(cases) == len(COMPILED_SAMPLE)
    results = [run_case(c, compiled=True) for c in cases]
    bad = [f"{r.name} ({r.status}): {r.reason}" for r in results if r.status != "pass"]
    assert not bad, "\n".join(bad)


def test_the_inductor_wrapper_refuses_a_module_dynamo_runs_eager():
    import torch

    from hspi_onnx.errors import UnsupportedError
    from hspi_onnx.graph.torch_module import InductorModule, compile_unavailable

    if compile_unavailable():
        pytest.skip(compile_unavailable())

    class Eager(torch.nn.Module):
        def forward(self, x):
            torch._dynamo.graph_break()
            return (x,)

    with pytest.raises(UnsupportedError, match="no graph"):
        InductorModule(Eager())(torch.ones(2))


def test_cases_run_in_child_processes_as_in_this_one(results):
    """run_isolated (how --compiled runs, so a native crash costs one case, not the run) gives
    what the cases give here."""
    from hspi_onnx.graph.conformance import collect, run_isolated

    cases = collect(["Abs", "Col2Im"])
    here = {r.name: (r.status, r.reason) for r in results if r.op in ("Abs", "Col2Im")}
    there = {r.name: (r.status, r.reason) for r in run_isolated(cases, compiled=False)}
    assert there == here and len(there) == 6


@pytest.mark.slow
def test_the_ninth_converted_model_is_compiled_too():
    """Every converted graph runs the interpreter's one forward: without a dynamo reset per
    model, dynamo stops recompiling after 8 and runs the rest eager under a compiled label."""
    import torch

    from hspi_onnx.graph.conformance import _array, collect
    from hspi_onnx.graph.to_torch import convert
    from hspi_onnx.graph.torch_module import InductorModule, compile_unavailable

    if compile_unavailable():
        pytest.skip(compile_unavailable())
    (case,) = [c for c in collect(["Relu"]) if c.name == "test_relu"]
    x = torch.from_numpy(_array(case.data_sets[0][0][0]).copy())
    for _ in range(9):
        module = InductorModule(convert(case.model))
        (y,) = module(x)
        assert module.graphs >= 1 and torch.equal(y, torch.relu(x))


def test_half_graphs_are_judged_within_their_precision():
    """fp16 values within 1e-2 of the float32 answers; a case off the spec in ONNX Runtime's own
    float32 kernels is not counted against the rewrite, fp16's own saturation is."""
    from hspi_onnx.graph.conformance import collect, run_rewrite

    names = {
        "test_resize_downsample_scales_linear_align_corners": "runs",  # ONNX Runtime reads it so in fp32 too
        "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal": "beyond tolerance",  # -65504
        "test_relu": "runs",
    }
    got = {c.name: run_rewrite(c, "fp16") for c in collect() if c.name in names}
    assert {k: s for k, (s, _) in got.items()} == names, got
    assert "-65504" in got["test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal"][1]
