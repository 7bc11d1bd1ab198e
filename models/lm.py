"""A decoder-only transformer language model over bytes, returning next-token logits."""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    mask: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.register_buffer("mask", torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = self.head_dim
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.reshape(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(self.mask[:t, :t], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 256, ctx: int = 32, d: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(ctx, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d, heads, ctx) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        h = self.ln(self.blocks(x))[:, -1]
        return h @ self.tok.weight.t()  # tied head: logits of the next token


def build(seed: int):
    torch.manual_seed(seed)
    model = TinyLM()
    with torch.no_grad():
        model.tok.weight.normal_(0.0, 0.5)
    spec = {"kind": "tokens", "shape": [32], "dtype": "int64", "vocab": 256}
    return model.eval(), spec, {}


Model = TinyLM  # the architecture, for loading saved weights
