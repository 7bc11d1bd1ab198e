"""Evidence that carries over to LLM stacks outside the DB (issue 29): the grid of printed
log-probabilities, errors against a reference, and the attributes read from labels."""

import json

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
    assert same["log_err_max"] < -5 and same["top1_flip_frac"] == 0 and same["inversions_mean"] == 0
    noisy = logits + rng.normal(0, 0.05, size=logits.shape).astype(np.float32)
    nids, nlp = _top(_served(noisy), 5)
    moved = dict(zip(FEATURES, request_features(nids, nlp, ref)))
    assert -2 < moved["log_err_mean"] < np.log10(0.2) and moved["log_err_max"] > same["log_err_max"]
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


def test_a_gguf_file_s_own_types_override_its_name():
    label = "llamacpp@0.3.36/cpu/q6_k/bs=1,fa=on,kv=f16,threads=1"
    assert llm_attributes(label)["weights"] == "5-6-bit"
    assert llm_attributes(label, {"q6_k": "8-bit"})["weights"] == "8-bit"
    from hspi_onnx.learn.llm_attributes import claimed_attributes

    assert claimed_attributes({"precision": "q6_k"}, {"q6_k": "8-bit"}) == {"weights": {"8-bit"}}


# --- the estimator: fitted, calibrated leaving stacks out, saved as JSON, read back strictly ---

STACK_LABELS = [
    "transformers@5.25.0/cpu/fp32/attn=eager,bs=1,threads=1",
    "transformers@5.25.0/cpu/fp32/attn=sdpa,bs=1,threads=1",
    "onnxruntime@1.32.0/cpu/fp32/bs=1,opt=all,threads=1",
    "transformers@5.25.0/cpu/bf16/attn=sdpa,bs=1,threads=1",
    "openvino@2026.4.1/cpu/bf16/bs=1,threads=1",
    "llamacpp@0.3.36/cpu/q4_0/bs=1,fa=off,kv=f16,threads=1",
    "onnxruntime@1.32.0/cpu/int4/bs=1,opt=all,quant=mnb-acc4,threads=1",
    "llamacpp@0.3.36/cpu/q8_0/bs=1,fa=off,kv=f16,threads=1",
    "onnxruntime@1.32.0/cpu/int8/bs=1,opt=all,quant=dynamic,threads=1",
]


def _synthetic_evidence(rng, chats: int = 24) -> np.ndarray:
    """Features whose error size follows the weight bits (log10 error: 32-bit -5, 16-bit -2,
    8-bit -1, 4-bit 0), with noise: what the real DB shows, idealized."""
    size = {"32-bit": -5.0, "16-bit": -2.0, "8-bit": -1.0, "<=4-bit": 0.0}
    x = rng.normal(0, 0.1, size=(len(STACK_LABELS), chats, len(FEATURES)))
    for i, label in enumerate(STACK_LABELS):
        x[i, :, :4] += size[llm_attributes(label)["weights"]]
    return x


@pytest.fixture(scope="module")
def fitted():
    from hspi_onnx.learn.llm_estimator import fit_estimator

    return fit_estimator(_synthetic_evidence(np.random.default_rng(0)), STACK_LABELS, "ab" * 32, STACK_LABELS[0])


def test_estimator_learns_calibrates_and_round_trips(tmp_path, fitted):
    from hspi_onnx.learn.llm_estimator import load_estimator, loso_accuracy

    rng = np.random.default_rng(0)
    est, loso = fitted
    acc = loso_accuracy(loso)
    assert acc["weights"][1] >= 0.8  # every weight class has a second stack to learn it from
    assert all(m.temperature > 0 for m in est.attributes.values())
    back = load_estimator(est.save(tmp_path / "e.json"))
    probe = rng.normal(0, 0.1, size=(3, len(FEATURES)))
    # a 4-bit stack's error size (log10 0): the features' noise around it
    got, want = back.estimate(probe), est.estimate(probe)
    assert got == want
    weights = got["attributes"]["weights"]
    assert next(iter(weights)) == "<=4-bit" and abs(sum(weights.values()) - 1) < 1e-3
    assert got["nearest"][0]["platform"] in STACK_LABELS and got["requests"] == 3


def test_grid_rule_reads_half_precision_logits():
    from hspi_onnx.learn.llm_estimator import grid_rule

    mean = np.zeros(len(FEATURES))
    probs = {"fp32": 0.5, "fp16": 0.3, "int8": 0.2}
    assert grid_rule(probs, mean) == probs
    mean[FEATURES.index("grid_bf16_frac")] = 0.95
    ruled = grid_rule(probs, mean)
    assert max(ruled, key=ruled.get) == "bf16" and abs(sum(ruled.values()) - 1) < 1e-9
    assert ruled["fp32"] == pytest.approx(0.05 * 0.5)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: "{not json", "not JSON"),
        (lambda d: json.dumps({**d, "format": "other/1"}), "not an hspi-llm-estimator/1"),
        (lambda d: json.dumps({**d, "features": d["features"][:-1]}), "other features"),
        (lambda d: json.dumps({**d, "scale": [0.0] * len(d["scale"])}), "scale is not positive"),
        (lambda d: json.dumps({**d, "mean": d["mean"][:3]}), "mean is not"),
        (
            lambda d: json.dumps({**d, "attributes": {"weights": {**d["attributes"]["weights"], "coef": [[1e999]]}}}),
            "coefficients",
        ),
        (lambda d: json.dumps({**d, "attributes": {"colour": {}}}), "attributes must be"),
        (lambda d: json.dumps({**d, "top_k": 500}), "top_k"),
        (lambda d: " " * (9 << 20), "larger than"),
    ],
)
def test_hostile_estimator_files_fail_with_one_clear_error(tmp_path, fitted, mangle, message):
    from hspi_onnx.learn.llm_estimator import BadEstimatorError, load_estimator

    est, _ = fitted
    path = tmp_path / "bad.json"
    path.write_text(mangle(est.as_dict()))
    with pytest.raises(BadEstimatorError, match=message):
        load_estimator(path)


@pytest.mark.parametrize(
    "claim, p32, want",
    [
        ({"precision": "fp32"}, 0.01, "INCONSISTENT"),
        ({"precision": "fp32"}, 0.99, "CONSISTENT"),
        ({"precision": "fp32"}, 0.5, "INCONCLUSIVE"),
        ({"weights": "32-bit", "runtime": "vllm"}, 0.99, "INCONCLUSIVE"),  # the runtime is not estimated
        ({"runtime": "vllm"}, 0.99, "INCONCLUSIVE"),
        ({"precision": "q4_k_m"}, 0.99, "INCONSISTENT"),
    ],
)
def test_a_claim_checked_on_estimates(claim, p32, want):
    from hspi_onnx.match.generation import verify_estimates

    estimates = {
        "attributes": {
            "weights": {"32-bit": p32, "<=4-bit": 1 - p32},
            "compute": {"fp32": 0.999, "int8": 0.001},
        }
    }
    assert verify_estimates(estimates, claim)["status"] == want


def test_claimed_attributes():
    from hspi_onnx.errors import HspiError
    from hspi_onnx.learn.llm_attributes import claimed_attributes

    assert claimed_attributes({"precision": "bf16"}) == {"weights": {"16-bit"}, "compute": {"bf16"}}
    assert claimed_attributes({"precision": "q5_k_m"}) == {"weights": {"5-6-bit"}}
    assert claimed_attributes({"kv": "q8_0", "runtime": "x"}) == {"kv": {"q8_0"}}
    with pytest.raises(HspiError, match="one of"):
        claimed_attributes({"weights": "3-bit"})
