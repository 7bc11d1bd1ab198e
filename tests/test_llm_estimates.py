"""Evidence that carries over to LLM stacks outside the DB (issue 29): the grid of printed
log-probabilities, errors against a reference, and the attributes read from labels."""

import numpy as np
import pytest
import torch

from hspi_onnx.learn.llm_attributes import llm_attributes
from hspi_onnx.learn.llm_evidence import FEATURES, NO_GRID, grid_exponent, request_features


def _served(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities as a server computes them in float32: (x - max) - log(sum(exp(x - max)))."""
    x = logits.astype(np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def _top(lp: np.ndarray, k: int = 5):
    order = np.argsort(-lp, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(lp, order, axis=-1).astype(np.float64)


@pytest.mark.parametrize("dtype, coarsest, finest", [(torch.bfloat16, 0, 6), (torch.float16, 4, 9)])
def test_logits_kept_in_a_half_dtype_leave_a_grid_in_the_printed_logprobs(dtype, coarsest, finest):
    rng = np.random.default_rng(0)
    raw = rng.normal(6.0, 3.0, size=(64, 500)).astype(np.float32)
    half = torch.from_numpy(raw).to(dtype).float().numpy()
    _, lp = _top(_served(half))
    grids = [grid_exponent(row) for row in lp]
    assert all(coarsest <= g <= finest for g in grids), sorted(set(grids))
    _, lp32 = _top(_served(raw))
    assert np.median([grid_exponent(row) for row in lp32]) == NO_GRID


def test_request_features_against_the_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(16, 300)).astype(np.float32)
    ids, lp = _top(_served(logits), 20)
    ref = {"topk_ids": ids, "topk_logprobs": lp.astype(np.float32)}
    same = dict(zip(FEATURES, request_features(ids[:, :5], lp[:, :5], ref)))
    assert same["err_max_abs"] < 1e-5 and same["top1_flip_frac"] == 0 and same["inversions_mean"] == 0
    noisy = logits + rng.normal(0, 0.05, size=logits.shape).astype(np.float32)
    nids, nlp = _top(_served(noisy), 5)
    moved = dict(zip(FEATURES, request_features(nids, nlp, ref)))
    assert 0.01 < moved["err_mean_abs"] < 0.2 and moved["err_max_abs"] > same["err_max_abs"]
    assert moved["grid_median"] == NO_GRID and len(FEATURES) == len(request_features(nids, nlp, ref))


@pytest.mark.parametrize(
    "label, want",
    [
        ("llamacpp@0.3.36/cpu/q4_k_m/bs=1,fa=off,kv=f16,threads=1", ("<=4-bit", "int8", "fp16")),
        ("llamacpp@0.3.36/cpu/f32/bs=1,fa=on,kv=q8_0,threads=1", ("32-bit", "fp32", "q8_0")),
        ("llamacpp@0.3.36/cpu/q6_k/bs=1,fa=on,kv=f16,threads=1", ("5-6-bit", "int8", "fp16")),
        ("transformers@5.25.0/cpu/bf16/attn=sdpa,bs=1,threads=1", ("16-bit", "bf16", "bf16")),
        ("transformers@5.25.0/cpu/int8/attn=sdpa,bs=1,quant=torchao-int8da,threads=1", ("8-bit", "int8", "fp32")),
        ("transformers@5.25.0/cpu/int4/attn=sdpa,bs=1,quant=hqq-4b-g64,threads=1", ("<=4-bit", "fp32", "fp32")),
        ("onnxruntime@1.32.0/cpu/int4/bs=1,opt=all,quant=mnb-acc4,threads=1", ("<=4-bit", "int8", "fp32")),
        ("onnxruntime@1.32.0/cpu/fp16/bs=1,opt=all,threads=1", ("16-bit", "fp16", "fp16")),
        ("openvino@2026.4.1/cpu/int8/bs=1,dq=0,quant=nncf-int8-sym,threads=1", ("8-bit", "fp32", "fp32")),
        ("openvino@2026.4.1/cpu/bf16/bs=1,threads=1", ("16-bit", "bf16", "bf16")),
        ("onnxruntime-genai@0.18.0/cpu/int4/bs=1,ort=1.32.0,quant=mnb-acc0,threads=1", ("<=4-bit", "fp32", "fp32")),
    ],
)
def test_llm_attributes_of_labels(label, want):
    got = llm_attributes(label)
    assert got is not None and (got["weights"], got["compute"], got["kv"]) == want
