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
    text = DOC.read_text()
    recorded = text[text.index(REWRITES_BEGIN) + len(REWRITES_BEGIN) : text.index(REWRITES_END)].strip()
    if not recorded.startswith(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}:"):
        pytest.skip("the table was made with other versions of onnx or onnxruntime")
    assert recorded == made.strip(), "run: python -m hspi_onnx.graph.conformance --rewrites --write docs/adapters.md"
