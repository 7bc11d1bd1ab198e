"""Transformer blocks as single ops: RotaryEmbedding and Attention (opset 23 on)."""

from __future__ import annotations

import torch

from hspi_onnx.errors import UnsupportedError

from .registry import registrar

op, register = registrar(__name__)


@op("RotaryEmbedding", since=23)
def _rotary(ctx, x, cos, sin, position_ids=None, interleaved=0, num_heads=0, rotary_embedding_dim=0):
    four_d = x.dim() == 4
    if four_d:  # (batch, heads, seq, head) -> (batch, seq, heads, head)
        y = x.transpose(1, 2)
    else:
        if not num_heads:
            raise UnsupportedError("RotaryEmbedding of a 3-D input needs num_heads")
        b, s, hidden = x.shape
        y = x.reshape(b, s, int(num_heads), hidden // int(num_heads))
    head = y.shape[-1]
    dim = int(rotary_embedding_dim) or head
    if position_ids is not None:
        cos, sin = cos[position_ids.long()], sin[position_ids.long()]
    if cos.shape[-1] != dim // 2 or sin.shape[-1] != dim // 2:
        raise UnsupportedError(f"RotaryEmbedding caches of width {cos.shape[-1]} for a rotary dimension of {dim}")
    cos, sin = cos.unsqueeze(2).to(y.dtype), sin.unsqueeze(2).to(y.dtype)  # (batch, seq, 1, dim/2)
    rot, rest = y[..., :dim], y[..., dim:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., : dim // 2], rot[..., dim // 2 :]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rot = torch.stack([real, imag], dim=-1).reshape(rot.shape)
    else:
        rot = torch.cat([real, imag], dim=-1)
    out = torch.cat([rot, rest], dim=-1)
    return out.transpose(1, 2) if four_d else out.reshape(x.shape)
