"""A corpus of ordinary models, written the way users write and export them, for testing the
ONNX-to-PyTorch converter and the reference evaluator on graphs beyond the zoo.

Every model is a plain PyTorch module with seeded weights (no downloads), small enough that a
forward pass on batch 8 takes milliseconds, exported with the TorchScript exporter
(``dynamo=False``, opset 17, constant folding) with a dynamic batch axis on every input and
output (and a dynamic ``sequence`` axis for ``bert``).

    CORPUS[name]         -> Entry(name, summary, builder, dynamic sequence axis)
    build(name, batch=8) -> (module in eval mode, {input name: example tensor})
    export(name, path)   -> path of the written .onnx (the same bytes for the same seed)
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17
SEED = 0


# --------------------------------------------------------------------------- models


class SmallCNN(nn.Module):
    """conv/bn/relu/pool blocks on 3x32x32 images -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(pixel_values), 1))


class TinyViT(nn.Module):
    """ViT-style encoder: patch embedding, class token, learned positions, pre-norm
    nn.TransformerEncoderLayer blocks (batch_first), final LayerNorm, linear head."""

    def __init__(
        self, image: int = 32, patch: int = 8, d: int = 64, heads: int = 4, depth: int = 2, classes: int = 10
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, kernel_size=patch, stride=patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.encoder(x))
        return self.head(x[:, 0])


class BertSelfAttention(nn.Module):
    """Multi-head self-attention as Hugging Face's BERT writes it (additive mask)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.dense = nn.Linear(d, d)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        new_shape = x.size()[:-1] + (self.heads, self.head_dim)
        return x.view(new_shape).permute(0, 2, 1, 3)

    def forward(self, h: torch.Tensor, extended_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(self.query(h)), self.split_heads(self.key(h)), self.split_heads(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = nn.functional.softmax(scores + extended_mask, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        ctx = ctx.view(ctx.size()[:-2] + (self.heads * self.head_dim,))
        return self.dense(ctx)


class BertLayer(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attention = BertSelfAttention(d, heads)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.intermediate = nn.Linear(d, 4 * d)
        self.output = nn.Linear(4 * d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)

    def forward(self, h: torch.Tensor, extended_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(h + self.attention(h, extended_mask))
        return self.ln2(h + self.output(F.gelu(self.intermediate(h))))


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 1/0 mask -> (B, 1, 1, T) additive mask, as transformers' get_extended_attention_mask."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class TinyBert(nn.Module):
    """BERT-style encoder: word + position + token-type embeddings, LayerNorm, encoder layers
    with an additive attention mask; outputs last_hidden_state (B, T, H) and pooler_output (B, H)."""

    def __init__(
        self, vocab: int = 1000, max_positions: int = 64, types: int = 2, d: int = 64, heads: int = 4, layers: int = 2
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, d)
        self.token_type_embeddings = nn.Embedding(types, d)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(d, heads) for _ in range(layers))
        self.pooler = nn.Linear(d, d)

    def forward(self, input_ids, attention_mask, token_type_ids):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        h = self.ln(h + self.position_embeddings(position_ids))
        mask = extended_attention_mask(attention_mask, h.dtype)
        for layer in self.layers:
            h = layer(h, mask)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled


class TinySentenceEncoder(nn.Module):
    """A sentence-transformers style encoder (all-MiniLM-like: a BERT model called without
    token_type_ids, which it takes from its buffer as transformers' BertEmbeddings does), masked
    mean pooling and L2 normalisation -> sentence_embedding."""

    def __init__(
        self, vocab: int = 1000, max_positions: int = 512, d: int = 48, heads: int = 4, layers: int = 2
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros((1, max_positions), dtype=torch.long), persistent=False)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(d, heads) for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        batch_size, seq_length = input_ids.size()
        position_ids = self.position_ids[:, :seq_length]
        # transformers' BertEmbeddings when token_type_ids is None
        buffered_token_type_ids = self.token_type_ids.expand(position_ids.shape[0], -1)
        buffered_token_type_ids = torch.gather(buffered_token_type_ids, dim=1, index=position_ids)
        token_type_ids = buffered_token_type_ids.expand(batch_size, seq_length)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        h = self.ln(h + self.position_embeddings(position_ids))
        ext = extended_attention_mask(attention_mask, h.dtype)
        for layer in self.layers:
            h = layer(h, ext)
        # sentence_transformers.models.Pooling (mean) then Normalize
        input_mask_expanded = attention_mask.unsqueeze(-1).expand(h.size()).float()
        sum_embeddings = torch.sum(h * input_mask_expanded, 1)
        sum_mask = torch.clamp(input_mask_expanded.sum(1), min=1e-9)
        return F.normalize(sum_embeddings / sum_mask, p=2, dim=1)


class GptBlock(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.register_buffer("bias", torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx), persistent=False)

    @staticmethod
    def gelu_new(x: torch.Tensor) -> torch.Tensor:  # GPT-2's tanh GELU, as transformers writes it
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(self.gelu_new(self.c_fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    """GPT-style decoder over bytes: learned positions, causal attention, GELU MLP, tied head;
    returns the next-token logits of the last position."""

    def __init__(self, vocab: int = 256, ctx: int = 32, d: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GptBlock(d, heads, ctx) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(0, input_ids.size(1), dtype=torch.long, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x)[:, -1, :])


class LstmClassifier(nn.Module):
    """nn.LSTM (2 layers) over float features (seq 12, features 8) -> 5 logits."""

    def __init__(self, features: int = 8, hidden: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out, (h_n, c_n) = self.lstm(features)
        return self.fc(out[:, -1])


class GruClassifier(nn.Module):
    """Token ids -> embedding -> bidirectional GRU (seq 20); the forward state at the last
    real token (gathered) and the backward state at the first -> 4 logits."""

    def __init__(self, vocab: int = 500, d: int = 32, hidden: int = 24, classes: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d, padding_idx=0)
        self.gru = nn.GRU(d, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embedding(input_ids))  # (B, T, 2H)
        hidden = out.shape[-1] // 2
        # index of the last non-padding token (padding is id 0 at the end), at least 0
        last = torch.clamp((input_ids != 0).sum(dim=1) - 1, min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, hidden)
        forward_last = torch.gather(out[:, :, :hidden], 1, index).squeeze(1)
        backward_first = out[:, 0, hidden:]
        return self.fc(torch.cat([forward_last, backward_first], dim=-1))


class TwoHead(nn.Module):
    """An MLP over 20 features returning two outputs: class logits and an L2-normalised embedding."""

    def __init__(self, features: int = 20, hidden: int = 64, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(features, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.SiLU())
        self.classifier = nn.Linear(hidden, classes)
        self.projection = nn.Linear(hidden, dim)

    def forward(self, features: torch.Tensor):
        h = self.trunk(features)
        return self.classifier(h), F.normalize(self.projection(h), dim=-1)


# --------------------------------------------------------------------------- inputs


def _gen(seed: int = 1234) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(batch: int) -> dict:
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=_gen())}


def _mask(batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    """Right-padded attention masks; the first row is full, the others 4..seq long."""
    lengths = torch.randint(4, seq + 1, (batch,), generator=gen)
    lengths[0] = seq
    return (torch.arange(seq)[None, :] < lengths[:, None]).long()


def _bert_inputs(batch: int, seq: int = 16) -> dict:
    g = _gen()
    mask = _mask(batch, seq, g)
    ids = torch.randint(2, 1000, (batch, seq), generator=g) * mask  # padding id 0
    types = (torch.arange(seq)[None, :] >= seq // 2).long().expand(batch, seq) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types.contiguous()}


def _sbert_inputs(batch: int, seq: int = 16) -> dict:
    g = _gen()
    mask = _mask(batch, seq, g)
    ids = torch.randint(2, 1000, (batch, seq), generator=g) * mask  # padding id 0
    return {"input_ids": ids, "attention_mask": mask}


def _gru_inputs(batch: int, seq: int = 20) -> dict:
    g = _gen()
    lengths = torch.randint(3, seq + 1, (batch,), generator=g)
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    return {"input_ids": torch.randint(1, 500, (batch, seq), generator=g) * mask}


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    model: Callable[[], nn.Module]
    inputs: Callable[[int], dict]
    outputs: tuple[str, ...]
    dynamic_sequence: bool = False


CORPUS: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("cnn", "conv/bn/relu/pool CNN, 3x32x32 -> 10 logits", SmallCNN, _images, ("logits",)),
        Entry(
            "vit",
            "ViT-style encoder (nn.TransformerEncoderLayer, pre-norm), 3x32x32 -> 10 logits",
            TinyViT,
            _images,
            ("logits",),
        ),
        Entry(
            "bert",
            "BERT-style encoder, 3 int64 inputs, dynamic sequence axis -> last_hidden_state, pooler_output",
            TinyBert,
            _bert_inputs,
            ("last_hidden_state", "pooler_output"),
            True,
        ),
        Entry(
            "sbert",
            "sentence-transformers style encoder: mean pooling + L2 normalise -> sentence_embedding",
            TinySentenceEncoder,
            _sbert_inputs,
            ("sentence_embedding",),
        ),
        Entry(
            "gpt",
            "GPT-style byte decoder, context 32, causal attention, tied head -> next-token logits",
            TinyGPT,
            lambda b: {"input_ids": torch.randint(0, 256, (b, 32), generator=_gen())},
            ("logits",),
        ),
        Entry(
            "lstm",
            "2-layer nn.LSTM classifier over float features (seq 12 x 8) -> 5 logits",
            LstmClassifier,
            lambda b: {"features": torch.randn(b, 12, 8, generator=_gen())},
            ("logits",),
        ),
        Entry(
            "gru",
            "embedding + bidirectional nn.GRU over token ids (seq 20) -> 4 logits",
            GruClassifier,
            _gru_inputs,
            ("logits",),
        ),
        Entry(
            "twohead",
            "MLP with two outputs: logits and a normalised embedding",
            TwoHead,
            lambda b: {"features": torch.randn(b, 20, generator=_gen())},
            ("logits", "embedding"),
        ),
    ]
}


def build(name: str, batch: int = 8, seed: int = SEED) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(module in eval mode with seeded weights, {input name: example tensor of ``batch`` rows})."""
    entry = CORPUS[name]
    torch.manual_seed(seed)
    module = entry.model().eval()
    return module, entry.inputs(batch)


def export(name: str, path, seed: int = SEED) -> Path:
    """Export corpus model ``name`` to ``path`` (a .onnx file, or a folder to hold NAME.onnx)."""
    import onnx

    entry = CORPUS[name]
    path = Path(path)
    if path.is_dir():
        path = path / f"{name}.onnx"
    module, inputs = build(name, batch=2, seed=seed)
    axes = {0: "batch", 1: "sequence"} if entry.dynamic_sequence else {0: "batch"}
    dynamic_axes = {k: dict(axes) for k in inputs}
    for out in entry.outputs:
        dynamic_axes[out] = dict(axes) if entry.dynamic_sequence and out == "last_hidden_state" else {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            buf,
            input_names=list(inputs),
            output_names=list(entry.outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load_model_from_string(buf.getvalue())
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def numpy_inputs(name: str, batch: int = 8) -> dict[str, np.ndarray]:
    """The example inputs of ``name`` as numpy arrays (what ONNX runtimes are fed)."""
    return {k: v.numpy() for k, v in CORPUS[name].inputs(batch).items()}


def module_outputs(name: str, batch: int = 8) -> list[np.ndarray]:
    module, inputs = build(name, batch)
    with torch.no_grad():
        out = module(*inputs.values())
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def rel_error(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check(name: str, path, batch: int = 8, rtol: float = 1e-4) -> list[float]:
    """ONNX Runtime (CPU) on the export against the module: the relative error of every output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, numpy_inputs(name, batch))
    want = module_outputs(name, batch)
    errors = [rel_error(g, w) for g, w in zip(got, want)]
    assert len(got) == len(want) and max(errors) <= rtol, (name, errors)
    return errors


if __name__ == "__main__":  # python tests/corpus.py OUTDIR: export and check every model
    import sys

    import onnx

    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for n in CORPUS:
        p = export(n, out)
        ops = sorted({node.op_type for node in onnx.load(p).graph.node})
        print(n, check(n, p), check(n, p, batch=1), ops)
