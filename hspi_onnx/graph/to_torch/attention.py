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


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, heads, seq, head)."""
    b, s, hidden = x.shape
    return x.reshape(b, s, n, hidden // n).transpose(1, 2)


def _allowed_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), float("-inf"), dtype=dtype, device=allowed.device))


def _frontier(q_len: int, kv_len: int, offset, device) -> torch.Tensor:
    """query index + offset - key index: (q, kv), or (batch, 1, q, kv) for per-batch offsets."""
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, torch.Tensor):
        return (i + offset.reshape(-1, 1, 1, 1)) - j
    return (i + int(offset)) - j


@op(
    "Attention",
    since=23,
    count_outputs=True,
    notes="3-D and 4-D inputs, masks (bool or additive, padded to the keys), past and present key/value, "
    "causal, grouped heads, softcap, the four qk_matmul_output modes, sliding windows, nonpad_kv_seqlen; "
    "softmax_precision is the module's dtype",
)
def _attention(
    ctx,
    q,
    k,
    v,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    is_causal=0,
    kv_num_heads=None,
    q_num_heads=None,
    qk_matmul_output_mode=0,
    scale=None,
    softcap=0.0,
    softmax_precision=None,
    left_window_size=-1,
    right_window_size=-1,
    _n=1,
):
    if (past_key is None) != (past_value is None):
        raise UnsupportedError("Attention needs past_key and past_value together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise UnsupportedError("Attention with nonpad_kv_seqlen and a past cache together is not covered")
    three_d = q.dim() == 3
    if three_d:
        if not q_num_heads or not kv_num_heads:
            raise UnsupportedError("Attention of 3-D inputs needs q_num_heads and kv_num_heads")
        q, k, v = _heads(q, int(q_num_heads)), _heads(k, int(kv_num_heads)), _heads(v, int(kv_num_heads))
    s = float(scale) if scale is not None else 1.0 / float(q.shape[-1]) ** 0.5
    root = s**0.5
    if past_key is not None:
        k = torch.cat([past_key, k], dim=2)
        v = torch.cat([past_value, v], dim=2)
    present_k, present_v = k, v
    q_len, kv_len = q.shape[2], k.shape[2]
    dtype = q.dtype
    bias = torch.zeros((q_len, kv_len), dtype=dtype, device=q.device)
    mask = attn_mask
    if mask is not None and mask.shape[-1] < kv_len:  # padded to the keys: not attended
        fill = False if mask.dtype == torch.bool else float("-inf")
        mask = torch.nn.functional.pad(mask, (0, kv_len - mask.shape[-1]), value=fill)
    if mask is not None:
        mask = _allowed_bias(mask, dtype) if mask.dtype == torch.bool else mask.to(dtype)
    per_batch = nonpad_kv_seqlen is not None and past_key is None
    offset = (nonpad_kv_seqlen.reshape(-1) - q_len) if per_batch else (past_key.shape[2] if past_key is not None else 0)
    if is_causal:
        base = bias if mask is None else mask + bias
        bias = base + _allowed_bias(_frontier(q_len, kv_len, offset, q.device) >= 0, dtype)
    elif mask is not None:
        bias = bias + mask
    left, right = int(left_window_size), int(right_window_size)
    if left >= 0 or right >= 0:
        diff = _frontier(q_len, kv_len, offset, q.device)
        allowed = torch.ones_like(diff, dtype=torch.bool)
        if left >= 0:
            allowed &= diff <= left
        if right >= 0:
            allowed &= -diff <= right
        bias = bias + _allowed_bias(allowed, dtype)
    if nonpad_kv_seqlen is not None:
        keep = torch.arange(kv_len, device=q.device).reshape(1, kv_len) < nonpad_kv_seqlen.reshape(-1, 1)
        bias = bias + _allowed_bias(keep, dtype).reshape(-1, 1, 1, kv_len)
    if q.shape[1] != k.shape[1]:  # grouped-query attention: each key/value head serves a group
        if q.shape[1] % k.shape[1]:
            raise UnsupportedError(f"Attention with {q.shape[1]} query heads over {k.shape[1]} key heads")
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    qk = torch.matmul(q * root, (k * root).transpose(-1, -2))
    if softcap and float(softcap) > 0:
        qk = torch.tanh(qk / float(softcap)) * float(softcap)
    with_bias = qk + bias
    top = with_bias.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isneginf(top), torch.zeros_like(top), top)
    e = torch.exp(with_bias - top)
    total = e.sum(dim=-1, keepdim=True)
    probs = e / torch.where(total == 0, torch.ones_like(total), total)
    dead = torch.isneginf(bias.amax(dim=-1, keepdim=True))  # rows the masks leave empty: zero
    probs = torch.where(dead, torch.zeros_like(probs), probs)
    mode = int(qk_matmul_output_mode)
    if mode not in (0, 1, 2, 3):
        raise UnsupportedError(f"Attention qk_matmul_output_mode={mode} is not covered")
    qk_out = {0: qk, 1: qk, 2: with_bias, 3: probs}[mode]
    y = torch.matmul(probs, v)
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return [y, present_k, present_v, qk_out][:_n]


@op("SwiGLU", since=28)
def _swiglu(ctx, a, b, alpha=1.0):
    return a * torch.sigmoid(alpha * a) * b


@op("TensorScatter", since=24)
def _tensor_scatter(ctx, past, update, write_indices=None, axis=-2, mode="linear"):
    if mode not in ("linear", "circular"):
        raise UnsupportedError(f"TensorScatter mode {mode!r} is not covered")
    ax = int(axis) % past.dim()
    if ax == 0:
        raise UnsupportedError("TensorScatter along the batch axis is not covered")
    out = past.clone()
    length, steps = past.shape[ax], update.shape[ax]
    starts = write_indices.reshape(-1).tolist() if write_indices is not None else [0] * past.shape[0]
    for b, start in enumerate(starts):
        pos = torch.arange(int(start), int(start) + steps, device=past.device)
        if mode == "circular":
            pos = pos % length
        out[b].index_copy_(ax - 1, pos, update[b])
    return out


@op("CausalConvWithState", since=27, count_outputs=True)
def _causal_conv(ctx, x, weight, bias=None, past_state=None, activation="none", _n=1):
    if activation not in ("none", "silu", "swish"):
        raise UnsupportedError(f"CausalConvWithState activation {activation!r} is not covered")
    channels, k = x.shape[1], weight.shape[2]
    past = past_state if past_state is not None else x.new_zeros((x.shape[0], channels, k - 1))
    padded = torch.cat([past, x], dim=2)
    y = torch.nn.functional.conv1d(padded, weight, bias, groups=channels)
    if activation != "none":
        y = y * torch.sigmoid(y)
    return [y, padded[:, :, padded.shape[2] - (k - 1) :]][:_n]


@op(
    "LinearAttention",
    since=27,
    count_outputs=True,
    notes="the recurrent form, one step per position; chunk_size is a hint",
)
def _linear_attention(
    ctx,
    q,
    k,
    v,
    past_state=None,
    decay=None,
    beta=None,
    chunk_size=0,
    kv_num_heads=None,
    q_num_heads=None,
    scale=0.0,
    update_rule="gated_delta",
    _n=1,
):
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise UnsupportedError(f"LinearAttention update_rule {update_rule!r} is not covered")
    if not q_num_heads or not kv_num_heads or int(q_num_heads) % int(kv_num_heads):
        raise UnsupportedError("LinearAttention needs q_num_heads a multiple of kv_num_heads")
    gating, delta = update_rule in ("gated", "gated_delta"), update_rule in ("delta", "gated_delta")
    if gating != (decay is not None) or delta != (beta is not None):
        raise UnsupportedError(f"LinearAttention {update_rule} with the wrong decay/beta inputs")
    hq, hk = int(q_num_heads), int(kv_num_heads)
    b, t, _ = q.shape
    f32 = torch.float32
    q4, k4, v4 = (_heads(x, n).to(f32) for x, n in ((q, hq), (k, hk), (v, hk)))
    d_k, d_v = q4.shape[-1], v4.shape[-1]
    if decay is not None:
        decay4 = (decay.reshape(b, t, hk, 1).transpose(1, 2) if decay.shape[-1] == hk else _heads(decay, hk)).to(f32)
    if beta is not None:
        beta4 = beta.reshape(b, t, beta.shape[-1], 1).transpose(1, 2).to(f32)
    state = past_state.to(f32).clone() if past_state is not None else q4.new_zeros((b, hk, d_k, d_v))
    s = float(scale) if scale else 1.0 / d_k**0.5
    outs = []
    for i in range(t):
        k_t, v_t = k4[:, :, i, :], v4[:, :, i, :]
        if gating:
            state = state * torch.exp(decay4[:, :, i, :])[..., None]
        if delta:
            retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
            v_t = beta4[:, :, i, :] * (v_t - retrieved)
        state = state + k_t[..., :, None] * v_t[..., None, :]
        read = state.repeat_interleave(hq // hk, dim=1) if hq != hk else state
        outs.append(s * torch.einsum("bhd,bhdm->bhm", q4[:, :, i, :], read))
    y = torch.stack(outs, dim=2).transpose(1, 2).reshape(b, t, hq * d_v).to(q.dtype)
    present = state.to(past_state.dtype if past_state is not None else q.dtype)
    return [y, present][:_n]


@op("FlexAttention", since=1, notes="domain ai.onnx.preview; score_mod and prob_mod subgraphs run on the whole tensor")
def _flex_attention(ctx, q, k, v, scale=None, score_mod=None, prob_mod=None, softmax_precision=None):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise UnsupportedError("FlexAttention takes rank-4 Q, K and V")
    if q.shape[1] != k.shape[1]:
        if q.shape[1] % k.shape[1]:
            raise UnsupportedError(f"FlexAttention with {q.shape[1]} query heads over {k.shape[1]} key heads")
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = float(scale) if scale is not None else 1.0 / float(q.shape[-1]) ** 0.5
    root = torch.tensor(s, dtype=torch.float32).sqrt().to(q.dtype)
    scores = torch.matmul(q * root, (k * root).transpose(-1, -2))
    if score_mod is not None:
        scores = score_mod(scores).to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    if prob_mod is not None:
        probs = prob_mod(probs).to(probs.dtype)
    return torch.matmul(probs, v.to(probs.dtype)).to(v.dtype)
