"""Convolutions, pools, Gemm and MatMul."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hspi_onnx.errors import UnsupportedError

from .registry import registrar

op, register = registrar(__name__)

# auto_pad SAME_UPPER / SAME_LOWER pad to ceil(input / stride) outputs, the text of Conv-11,
# AveragePool-11 and MaxPool-12. The older versions' text ("the output size matches the input")
# was rewritten without a change of behaviour (onnx/onnx#3188): ONNX's shape inference and
# ONNX Runtime compute ceil(input / stride) for them too, so those versions count as followed.

# --------------------------------------------------------------------------- conv and pools


def _same_pads(
    auto_pad: str, size: list[int], kernel: list[int], strides: list[int], dilations: list[int], pads: list[int]
) -> list[int]:
    """ONNX pads [begin..., end...] after auto_pad (NOTSET keeps ``pads``, VALID is no padding)."""
    nd = len(kernel)
    if auto_pad in ("NOTSET", ""):
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedError(f"auto_pad={auto_pad} is not covered")
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    """ONNX begin/end pads of the trailing axes as F.pad's (last axis first) list."""
    return [p for i in reversed(range(len(begin))) for p in (begin[i], end[i])]


@op("Conv", since=1, notes="1 to 3 spatial axes")
def _conv(ctx, x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise UnsupportedError(f"Conv over {nd} spatial axes is not covered")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = _same_pads(auto_pad, list(x.shape[2:]), list(w.shape[2:]), strides, dilations, list(pads or [0] * (2 * nd)))
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        x = F.pad(x, _torch_pad(begin, end))
        begin = [0] * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, strides, begin, dilations, int(group))


@op("ConvTranspose", since=11, notes="1 to 3 spatial axes")
def _conv_transpose(
    ctx,
    x,
    w,
    b=None,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
):
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise UnsupportedError(f"ConvTranspose over {nd} spatial axes is not covered")
    if auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedError(f"auto_pad={auto_pad} is not covered")
    size, kernel = list(x.shape[2:]), list(w.shape[2:])
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    extra = list(output_padding or [0] * nd)
    full = [(size[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        want = list(output_shape)[-nd:] if output_shape is not None else [size[i] * strides[i] for i in range(nd)]
        total = [full[i] + extra[i] - want[i] for i in range(nd)]
        if auto_pad == "SAME_UPPER":
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        else:  # the spec's else branch: SAME_LOWER, NOTSET with output_shape
            begin, end = [t - t // 2 for t in total], [t // 2 for t in total]
    elif auto_pad == "VALID":
        begin, end = [0] * nd, [0] * nd
    else:
        p = list(pads or [0] * (2 * nd))
        begin, end = p[:nd], p[nd:]
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    y = fn(x, w, None, strides, 0, 0, int(group), dilations)  # the full extent, unpadded
    # output_padding and negative pads (an output_shape beyond the full extent): positions that
    # no input reaches, zero before the bias
    grow_begin = [max(0, -q) for q in begin]
    grow_end = [extra[i] + max(0, -end[i]) for i in range(nd)]
    if any(grow_begin) or any(grow_end):
        y = F.pad(y, [q for i in reversed(range(nd)) for q in (grow_begin[i], grow_end[i])])
    for i in range(nd):
        y = y.narrow(2 + i, max(0, begin[i]), full[i] + extra[i] - begin[i] - end[i])
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * nd))
    return y


def _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad):
    k = list(kernel_shape)
    nd = len(k)
    if nd not in (1, 2, 3):
        raise UnsupportedError(f"pooling over {nd} spatial axes is not covered")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = _same_pads(auto_pad, list(x.shape[2:]), k, strides, dilations, list(pads or [0] * (2 * nd)))
    return k, nd, strides, dilations, pads[:nd], pads[nd:]


@op(
    "MaxPool",
    since=1,
    count_outputs=True,
    notes="1 to 3 spatial axes; the Indices output (opset 8) where the pads are symmetric and at most half the "
    "kernel, column-major (storage_order=1) on 2-D only",
)
def _max_pool(
    ctx, x, kernel_shape, strides=None, dilations=None, pads=None, auto_pad="NOTSET", ceil_mode=0, storage_order=0, _n=1
):
    k, nd, strides, dilations, begin, end = _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    if begin != end or any(2 * p > kk for p, kk in zip(begin, k)):  # torch's limits on padding
        if _n > 1:
            raise UnsupportedError("MaxPool's Indices output with asymmetric or wide pads is not covered")
        x = F.pad(x, _torch_pad(begin, end), value=-math.inf)
        begin = [0] * nd
    if _n == 1:
        return fn(x, k, strides, begin, dilations, ceil_mode=bool(ceil_mode))
    if storage_order and nd != 2:
        raise UnsupportedError("MaxPool's column-major Indices are covered on 2-D inputs only")
    y, idx = fn(x, k, strides, begin, dilations, ceil_mode=bool(ceil_mode), return_indices=True)
    spatial = list(x.shape[2:])
    if storage_order:  # row-major index within the plane -> column-major
        idx = (idx // spatial[1]) + (idx % spatial[1]) * spatial[0]
    plane = math.prod(spatial)
    base = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1], *([1] * nd))
    return [y, idx + base * plane]


@op("MaxUnpool", since=9)
def _max_unpool(ctx, x, indices, output_shape=None, kernel_shape=None, pads=None, strides=None):
    # the indices address the inferred (pre-pool) shape; an output_shape beyond it pads with zeros
    nd = x.dim() - 2
    strides = list(strides or [1] * nd)
    p = list(pads or [0] * (2 * nd))
    spatial = [(x.shape[2 + i] - 1) * strides[i] + kernel_shape[i] - p[i] - p[i + nd] for i in range(nd)]
    inferred = [x.shape[0], x.shape[1], *spatial]
    out = x.new_zeros(math.prod(inferred))
    out[indices.reshape(-1).long()] = x.reshape(-1)
    out = out.reshape(inferred)
    if output_shape is None:
        return out
    shape = [int(v) for v in output_shape.tolist()]
    if any(s < i for s, i in zip(shape, inferred)):
        raise UnsupportedError("MaxUnpool to an output_shape smaller than the pooled input is not covered")
    return F.pad(out, [q for i in reversed(range(len(shape))) for q in (0, shape[i] - inferred[i])])


def _windows(x, k, strides, dilations, begin, end, ceil_mode, fill: float):
    """Every pooling window of ``x`` as trailing axes: (N, C, out..., k...), with the pads
    (``fill``) and, in ceil mode, the overhang past the end (also ``fill``); and the same windows
    of a map that is 1 inside the input, 2 in the pads, 0 in the overhang (to count by)."""
    nd = len(k)
    where = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    where = F.pad(where, _torch_pad(begin, end), value=2.0)
    x = F.pad(x, _torch_pad(begin, end), value=fill)
    for i in range(nd):
        length, span = x.shape[2 + i], (k[i] - 1) * dilations[i] + 1
        out = (length - span) // strides[i] + 1
        if ceil_mode:
            out = -(-(length - span) // strides[i]) + 1
            if (out - 1) * strides[i] >= length - end[i]:  # a last window starting in the end pad: dropped
                out -= 1
        over = max(0, (out - 1) * strides[i] + span - length)
        if over:
            x = F.pad(x, [0, 0] * (nd - 1 - i) + [0, over], value=fill)
            where = F.pad(where, [0, 0] * (nd - 1 - i) + [0, over], value=0.0)
    for i in range(nd):
        span = (k[i] - 1) * dilations[i] + 1
        x = x.unfold(2 + i, span, strides[i])[..., :: dilations[i]]
        where = where.unfold(2 + i, span, strides[i])[..., :: dilations[i]]
    return x, where


@op("LpPool", since=11, notes="1 to 3 spatial axes")  # LpPool-2 pads by its own rule
def _lp_pool(ctx, x, kernel_shape, p=2, strides=None, pads=None, auto_pad="NOTSET", ceil_mode=0, dilations=None):
    k, nd, strides, dilations, begin, end = _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    w, _ = _windows(x, k, strides, dilations, begin, end, bool(ceil_mode), 0.0)
    dims = tuple(range(-nd, 0))
    return (w.abs() ** p).sum(dim=dims) ** (1.0 / p)


@op("AveragePool", since=1, notes="1 to 3 spatial axes")
def _avg_pool(
    ctx, x, kernel_shape, strides=None, pads=None, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None
):
    k, nd, strides, dilations, begin, end = _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    if any(d != 1 for d in dilations):
        w, where = _windows(x, k, strides, dilations, begin, end, bool(ceil_mode), 0.0)
        dims = tuple(range(-nd, 0))
        counted = (where > 0) if count_include_pad else (where == 1)
        return w.sum(dim=dims) / counted.to(x.dtype).sum(dim=dims)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    if begin == end and all(2 * p <= kk for p, kk in zip(begin, k)):
        return fn(x, k, strides, begin, ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))
    # asymmetric pads: the window sums over the padded input divided by the count of what it covers
    tp = _torch_pad(begin, end)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    count = F.pad(ones, tp, value=1.0 if count_include_pad else 0.0)
    num = fn(F.pad(x, tp), k, strides, 0, ceil_mode=bool(ceil_mode), count_include_pad=True)
    den = fn(count, k, strides, 0, ceil_mode=bool(ceil_mode), count_include_pad=True)
    return num / den


@op("Gemm", since=7)  # Gemm-1 and -6 take a broadcast attribute
def _gemm(ctx, a_, b_, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a_ = a_.t() if transA else a_
    b_ = b_.t() if transB else b_
    y = torch.matmul(a_, b_)
    y = y * alpha if alpha != 1.0 else y
    return y if c is None else y + (c * beta if beta != 1.0 else c)


register("MatMul", lambda ctx, a, b: torch.matmul(a, b), since=1)
register("GlobalAveragePool", lambda ctx, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True), since=1)
register("GlobalMaxPool", lambda ctx, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True), since=1)


def _centered(v: torch.Tensor, zero_point, channel_axis: int | None = None) -> torch.Tensor:
    """An integer tensor minus its zero point (a scalar, or one per ``channel_axis`` slice), float64
    (exact for 8-bit data and any sum a real model makes)."""
    out = v.to(torch.float64)
    if zero_point is None:
        return out
    zp = zero_point.to(torch.float64)
    if zp.numel() > 1 and channel_axis is not None:
        shape = [1] * v.dim()
        shape[channel_axis] = -1
        zp = zp.reshape(shape)
    return out - zp


def _int_conv(x, x_zero_point, w, w_zero_point, conv: dict) -> torch.Tensor:
    """The integer convolution of ``x`` and ``w`` less their zero points (``w``'s one per output
    channel), in float64 (exact), rounded; ``conv``: the Conv attributes."""
    unknown = sorted(set(conv) - {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
    if unknown:
        raise UnsupportedError(f"the integer convolution's attribute {unknown[0]!r} is not covered")
    return torch.round(_conv(None, _centered(x, x_zero_point), _centered(w, w_zero_point, 0), None, **conv))


@op("MatMulInteger", since=10)
def _matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    a_ = _centered(a, a_zero_point, a.dim() - 2 if a_zero_point is not None and a_zero_point.numel() > 1 else None)
    b_ = _centered(b, b_zero_point, b.dim() - 1 if b_zero_point is not None and b_zero_point.numel() > 1 else None)
    return torch.round(torch.matmul(a_, b_)).to(torch.int32)


@op("ConvInteger", since=10)
def _conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None, **conv):
    return _int_conv(x, x_zero_point, w, w_zero_point, conv).to(torch.int32)


def _requantize(r: torch.Tensor, zero_point, like: torch.Tensor) -> torch.Tensor:
    out = zero_point.dtype if zero_point is not None else like.dtype
    if zero_point is not None:
        r = r + zero_point.to(torch.float64)
    info = torch.iinfo(out)
    return torch.round(r.clamp(info.min, info.max)).to(out)


@op("QLinearMatMul", since=10)
def _qlinear_matmul(ctx, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
    c = torch.matmul(_centered(a, a_zero_point), _centered(b, b_zero_point))
    factor = (a_scale.to(torch.float32) * b_scale.to(torch.float32) / y_scale.to(torch.float32)).to(torch.float64)
    return _requantize(c * factor, y_zero_point, a)


@op("QLinearConv", since=10)
def _qlinear_conv(
    ctx, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, bias=None, **conv
):
    y = _int_conv(x, x_zero_point, w, w_zero_point, conv)
    if bias is not None:
        y = y + bias.to(torch.float64).reshape(1, -1, *([1] * (y.dim() - 2)))
    ws = w_scale.to(torch.float32)
    if ws.numel() > 1:
        ws = ws.reshape(1, -1, *([1] * (y.dim() - 2)))
    factor = (x_scale.to(torch.float32) * ws / y_scale.to(torch.float32)).to(torch.float64)
    return _requantize(y * factor, y_zero_point, x)


@op("DeformConv", since=19, notes="two spatial axes; bilinear samples at the offset kernel positions, zero outside")
def _deform_conv(
    ctx,
    x,
    w,
    offset,
    b=None,
    mask=None,
    dilations=None,
    group=1,
    kernel_shape=None,
    offset_group=1,
    pads=None,
    strides=None,
):
    if x.dim() != 4:
        raise UnsupportedError(f"DeformConv over {x.dim() - 2} spatial axes is not covered (two are)")
    n, channels, height, width = x.shape
    out_channels, per_group, kh, kw = w.shape
    if kernel_shape is not None and tuple(kernel_shape) != (kh, kw):
        raise UnsupportedError("DeformConv with a kernel_shape other than the weights' is not covered")
    dh, dw = dilations or (1, 1)
    sh, sw = strides or (1, 1)
    top, left = (pads or (0, 0, 0, 0))[:2]
    oh, ow = offset.shape[2:]
    groups, offsets = int(group), int(offset_group)
    # each kernel position's sampling point: the regular grid plus its learned offset (dy, dx)
    # (positions in float32 at least: in half precision a pixel index past 256 is not exact)
    pos = torch.promote_types(x.dtype, torch.float32)
    off = offset.to(pos).reshape(n, offsets, kh, kw, 2, oh, ow)
    base_y = (torch.arange(oh, dtype=pos) * sh - top)[None, :, None] + (torch.arange(kh, dtype=pos) * dh)[
        :, None, None
    ]  # (kh, oh, 1)
    base_x = (torch.arange(ow, dtype=pos) * sw - left)[None, None, :] + (torch.arange(kw, dtype=pos) * dw)[
        :, None, None
    ]  # (kw, 1, ow)
    y = base_y[None, None, :, None] + off[:, :, :, :, 0]  # (n, offsets, kh, kw, oh, ow)
    xx = base_x[None, None, None, :] + off[:, :, :, :, 1]
    grid = torch.stack((xx / (width - 1) * 2 - 1, y / (height - 1) * 2 - 1), dim=-1).to(x.dtype)  # (x, y) order
    per_offset = channels // offsets
    cols = []
    for g in range(offsets):
        sampled = F.grid_sample(
            x[:, g * per_offset : (g + 1) * per_offset],
            grid[:, g].reshape(n, kh * kw * oh, ow, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        ).reshape(n, per_offset, kh, kw, oh, ow)
        if mask is not None:
            sampled = sampled * mask.reshape(n, offsets, kh, kw, oh, ow)[:, g, None]
        cols.append(sampled)
    columns = torch.cat(cols, dim=1).reshape(n, groups, per_group, kh * kw, oh * ow)
    weights = w.reshape(groups, out_channels // groups, per_group, kh * kw)
    out = torch.einsum("ngckp,gock->ngop", columns, weights).reshape(n, out_channels, oh, ow)
    return out + b.reshape(1, -1, 1, 1) if b is not None else out
