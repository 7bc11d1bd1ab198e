"""What an LLM stack's label says about the three things a buyer asks when the stack itself is not in
the DB: how many bits the weights keep, in which precision the matrix products run, and in which
precision the KV cache is kept. Read from the label by one table per runtime family, written from
what each runtime documents for the setting (docs/llm-estimates.md lists it).

* ``weights``: ``<=4-bit``, ``5-6-bit``, ``8-bit``, ``16-bit``, ``32-bit``.
* ``compute``: the activations' precision in the matrix products: ``fp32``, ``bf16``, ``fp16``, or
  ``int8`` where the runtime quantizes activations for integer dot products (llama.cpp's quantized
  types, ONNX Runtime's dynamic int8 and MatMulNBits at accuracy level 4, OpenVINO's dynamic
  quantization, torchao's dynamic-activation int8).
* ``kv``: ``fp32``, ``bf16``, ``fp16``, ``q8_0``, ``q4_0``.
"""

from __future__ import annotations

from hspi_onnx.labels import Platform

WEIGHT_CLASSES = ("<=4-bit", "5-6-bit", "8-bit", "16-bit", "32-bit")
ATTRIBUTES = ("weights", "compute", "kv")

_GGUF_WEIGHTS = {
    "f32": "32-bit",
    "f16": "16-bit",
    "bf16": "16-bit",
    "q8_0": "8-bit",
    "q6_k": "5-6-bit",
    "q5_k_m": "5-6-bit",
    "q4_k_m": "<=4-bit",
    "q4_1": "<=4-bit",
    "q4_0": "<=4-bit",
}
_GGUF_COMPUTE = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}  # quantized types: int8 (q8 activations)
_FLOAT = {"fp32": "32-bit", "bf16": "16-bit", "fp16": "16-bit", "int8": "8-bit", "int4": "<=4-bit"}
_KV = {"f16": "fp16", "q8_0": "q8_0", "q4_0": "q4_0"}


def weight_class(bits: int) -> str:
    """The weight class of a number of bits per weight."""
    if bits <= 4:
        return "<=4-bit"
    return "5-6-bit" if bits <= 6 else ("8-bit" if bits <= 8 else ("16-bit" if bits <= 16 else "32-bit"))


def llm_attributes(label: str, gguf_weights: dict[str, str] | None = None) -> dict[str, str] | None:
    """``weights``, ``compute`` and ``kv`` of an LLM platform label (None: not an LLM runtime this
    table knows). ``gguf_weights``: the weight class of each GGUF type as the model's files hold
    it (:func:`hspi_onnx.gguffile.dominant_bits`), where it differs from the type's name."""
    p = Platform.parse(label)
    k, prec = p.knob, p.precision
    if p.runtime == "llamacpp":
        return {
            "weights": (gguf_weights or {}).get(prec, _GGUF_WEIGHTS[prec]),
            "compute": _GGUF_COMPUTE.get(prec, "int8"),
            "kv": _KV.get(k.get("kv", "f16"), "fp16"),
        }
    if p.runtime == "transformers":
        quant = k.get("quant")
        if quant is None:
            return {"weights": _FLOAT[prec], "compute": prec, "kv": prec}
        return {
            "weights": _FLOAT[prec],
            "compute": "int8" if quant == "torchao-int8da" else "fp32",
            "kv": "fp32",
        }
    if p.runtime == "onnxruntime":
        compute = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}.get(prec)
        if prec == "int4":
            compute = "int8" if k.get("quant") == "mnb-acc4" else "fp32"
        return {"weights": _FLOAT[prec], "compute": compute or "fp32", "kv": "fp16" if prec == "fp16" else "fp32"}
    if p.runtime == "openvino":
        if k.get("quant"):  # NNCF-compressed weights; dynamic quantization of activations unless dq=0
            return {"weights": _FLOAT[prec], "compute": "fp32" if k.get("dq") == "0" else "int8", "kv": "fp32"}
        return {"weights": _FLOAT[prec], "compute": prec, "kv": prec}
    if p.runtime == "onnxruntime-genai":
        compute = "int8" if k.get("quant") == "mnb-acc4" else "fp32"
        return {"weights": _FLOAT[prec], "compute": compute, "kv": "fp32"}
    if p.runtime == "pytorch":
        return {"weights": _FLOAT[prec], "compute": prec, "kv": prec}
    return None


CLASSES = {
    "weights": WEIGHT_CLASSES,
    "compute": ("fp32", "bf16", "fp16", "int8"),
    "kv": ("fp32", "bf16", "fp16", "q8_0", "q4_0"),
}
_PRECISION_CLAIMS = {
    "fp32": {"weights": {"32-bit"}, "compute": {"fp32"}},
    "f32": {"weights": {"32-bit"}, "compute": {"fp32"}},
    "bf16": {"weights": {"16-bit"}, "compute": {"bf16"}},
    "fp16": {"weights": {"16-bit"}, "compute": {"fp16"}},
    "f16": {"weights": {"16-bit"}, "compute": {"fp16"}},
    "int8": {"weights": {"8-bit"}},
    "int4": {"weights": {"<=4-bit"}},
}


def claimed_attributes(claim: dict[str, str], gguf_weights: dict[str, str] | None = None) -> dict[str, set[str]]:
    """What a claim says about the attributes: ``weights``/``compute``/``kv`` given directly, or
    implied by ``precision`` (fp32: 32-bit weights computed in fp32; a GGUF type: its weight
    bits, as the model's file holds them with ``gguf_weights``). Empty when the claim says
    nothing about them."""
    from hspi_onnx.errors import HspiError

    out: dict[str, set[str]] = {}
    prec = claim.get("precision")
    if prec is not None:
        if prec in _PRECISION_CLAIMS:
            out.update({k: set(v) for k, v in _PRECISION_CLAIMS[prec].items()})
        elif prec in _GGUF_WEIGHTS:
            out["weights"] = {(gguf_weights or {}).get(prec, _GGUF_WEIGHTS[prec])}
    for name, classes in CLASSES.items():
        if name in claim:
            if claim[name] not in classes:
                raise HspiError(f"claim {name}={claim[name]!r}: one of {', '.join(classes)}")
            out[name] = {claim[name]}
    return out
