"""Shapes, indexing, gathers and scatters, concatenation, padding, ranges, top-k, einsum."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hspi_onnx.errors import UnsupportedError

from .common import _axis, _ints, _saturate
from .conv_pool import _torch_pad
from .registry import registrar

op, register = registrar(__name__)

# --------------------------------------------------------------------------- shapes and indexing


@op("Reshape", since=5)  # Reshape-1 takes the shape as an attribute
def _reshape(ctx, x, shape, allowzero=0):
    dims = _ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Slice", since=10)  # Slice-1 takes starts, ends and axes as attributes
def _slice(ctx, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index: list = [slice(None)] * x.dim()
    flips = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = _axis(ax, x.dim())
        n = x.shape[ax]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            index[ax] = slice(max(0, min(n, s)), max(0, min(n, e)), st)
        elif st < 0:
            s, e = max(-1, min(n - 1, s)), max(-1, min(n - 1, e))
            idx = torch.arange(s, e, st, device=x.device)
            index[ax] = slice(None)
            flips.append((ax, idx))
        else:
            raise UnsupportedError("Slice with a zero step is invalid")
    x = x[tuple(index)]
    for ax, idx in flips:
        x = x.index_select(ax, idx)
    return x


@op("Gather", since=1)
def _gather(ctx, x, idx, axis=0):
    axis = _axis(axis, x.dim())
    flat = idx.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    out = x.index_select(axis, flat)
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


@op("GatherElements", since=11)
def _gather_elements(ctx, x, idx, axis=0):
    axis = _axis(axis, x.dim())
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


@op("GatherND", since=11)
def _gather_nd(ctx, x, idx, batch_dims=0):
    b = int(batch_dims)
    idx = idx.long()
    k = idx.shape[-1]
    batch_shape = list(x.shape[:b])
    nb = int(np.prod(batch_shape, dtype=np.int64)) if b else 1
    xs = x.reshape([nb] + list(x.shape[b:]))
    ids = idx.reshape([nb, -1, k])
    ids = torch.where(ids < 0, ids + torch.tensor(list(x.shape[b : b + k]), device=x.device), ids)
    rows = torch.arange(nb, device=x.device).view(nb, 1).expand(nb, ids.shape[1])
    out = xs[(rows,) + tuple(ids[..., j] for j in range(k))]
    return out.reshape(list(idx.shape[:-1]) + list(x.shape[b + k :]))


@op("ScatterElements", since=11)
def _scatter_elements(ctx, x, idx, upd, axis=0, reduction="none"):
    axis = _axis(axis, x.dim())
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    if reduction == "none":
        return x.scatter(axis, idx, upd)
    reduce = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}.get(reduction)
    if reduce is None:
        raise UnsupportedError(f"ScatterElements reduction={reduction} is not covered")
    return x.scatter_reduce(axis, idx, upd, reduce, include_self=True)


@op("ScatterND", since=11)
def _scatter_nd(ctx, x, idx, upd, reduction="none"):
    idx = idx.long()
    k = idx.shape[-1]
    ids = idx.reshape(-1, k)
    ids = torch.where(ids < 0, ids + torch.tensor(list(x.shape[:k]), device=x.device), ids)
    u = upd.reshape([ids.shape[0]] + list(x.shape[k:]))
    out = x.clone()
    key = tuple(ids[:, j] for j in range(k))
    if reduction == "none":
        out[key] = u
    elif reduction == "add":
        out.index_put_(key, u, accumulate=True)
    elif reduction in ("mul", "max", "min"):
        # the leading k axes flattened to one: a scatter_reduce along it, update rows in order
        flat_idx = torch.zeros(ids.shape[0], dtype=torch.long, device=x.device)
        for j in range(k):
            flat_idx = flat_idx * x.shape[j] + ids[:, j]
        rows = out.reshape([-1] + list(x.shape[k:]))
        index = flat_idx.reshape([-1] + [1] * (rows.dim() - 1)).expand_as(u)
        how = {"mul": "prod", "max": "amax", "min": "amin"}[reduction]
        out = rows.scatter_reduce(0, index, u, how, include_self=True).reshape(x.shape)
    else:
        raise UnsupportedError(f"ScatterND reduction={reduction} is not covered")
    return out


# Scatter (deprecated in 11) is ScatterElements without reductions
register("Scatter", lambda ctx, x, idx, upd, axis=0: _scatter_elements(ctx, x, idx, upd, axis), since=9)


@op("ReverseSequence", since=10)
def _reverse_sequence(ctx, x, lens, batch_axis=1, time_axis=0):
    out = x.clone()
    for b, n in enumerate(lens.tolist()):
        n = int(n)
        idx = [slice(None)] * x.dim()
        idx[int(batch_axis)] = b
        idx[int(time_axis)] = slice(0, n)
        out[tuple(idx)] = torch.flip(x[tuple(idx)], [int(time_axis) - (int(time_axis) > int(batch_axis))])
    return out


@op("CenterCropPad", since=18)
def _center_crop_pad(ctx, x, shape, axes=None):
    want = _ints(shape) or []
    ax = [_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    for a, n in zip(ax, want):
        have = x.shape[a]
        if have > n:  # crop: the extra split with the larger half at the end
            x = x.narrow(a, (have - n) // 2, n)
        elif have < n:  # pad with zeros: the larger half at the end
            before = (n - have) // 2
            pads = [0, 0] * (x.dim() - a - 1) + [before, n - have - before]
            x = F.pad(x, pads)
    return x


@op("Split", since=2, count_outputs=True)  # Split-1 has no default axis
def _split(ctx, x, split=None, axis=0, num_outputs=None, _n=1):
    axis = _axis(axis, x.dim())
    if split is not None:
        sizes = _ints(split) if isinstance(split, torch.Tensor) else list(split)
        return list(torch.split(x, sizes, dim=axis))
    parts = num_outputs or _n
    return list(torch.split(x, math.ceil(x.shape[axis] / parts), dim=axis))


@op("Expand", since=8)
def _expand(ctx, x, shape):
    dims = _ints(shape)
    target = torch.broadcast_shapes(tuple(x.shape), tuple(dims))
    return x.expand(target)


@op("ConstantOfShape", since=9)
def _constant_of_shape(ctx, shape, value=None):
    v = torch.from_numpy(np.asarray(value if value is not None else np.zeros(1, np.float32)).copy())
    v = _saturate(v, ctx.dtype) if v.is_floating_point() else v
    return v.reshape(-1)[0].to(shape.device).expand(_ints(shape)).clone()


@op("Unsqueeze", since=1)
def _unsqueeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if isinstance(axes, torch.Tensor) else list(axes if axes is not None else a["axes"])
    rank = x.dim() + len(ax)
    for i in sorted(_axis(i, rank) for i in ax):
        x = x.unsqueeze(i)
    return x


@op("Squeeze", since=1)
def _squeeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if isinstance(axes, torch.Tensor) else (list(axes) if axes is not None else a.get("axes"))
    if ax is None:
        return x.squeeze()
    for i in sorted((_axis(i, x.dim()) for i in ax), reverse=True):
        x = x.squeeze(i)
    return x


@op("Flatten", since=1)
def _flatten(ctx, x, axis=1):
    axis = _axis(axis, x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


def _pad_index(n: int, begin: int, end: int, mode: str, device) -> torch.Tensor:
    """Source positions along one axis of length ``n`` padded by ``begin``/``end`` in ``mode``."""
    i = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return torch.remainder(i, n)
    if n == 1:  # reflect
        return torch.zeros_like(i)
    m = torch.remainder(i, 2 * (n - 1))
    return torch.where(m < n, m, 2 * (n - 1) - m)


# Pad-2 to -10 take pads and value as attributes; the branch below meant for them fails on the
# list of pads (_ints), so the attribute form is not covered
@op(
    "Pad",
    since=11,
    notes="modes constant, reflect, edge and wrap; reflect with pads as long as the axis is refused",
)
def _pad(ctx, x, pads, constant_value=None, axes=None, mode="constant", **a):
    if not isinstance(pads, torch.Tensor):  # opset < 11: pads and value are attributes
        constant_value = a.get("value", 0.0)
    pads = _ints(pads)
    axes = [_axis(i, x.dim()) for i in (_ints(axes) if axes is not None else range(x.dim()))]
    n = len(axes)
    begin, end = [0] * x.dim(), [0] * x.dim()
    for j, ax in enumerate(axes):
        begin[ax], end[ax] = pads[j], pads[n + j]
    if mode == "constant":
        value = (
            0.0
            if constant_value is None
            else (constant_value.item() if isinstance(constant_value, torch.Tensor) else float(constant_value))
        )
        return F.pad(x, _torch_pad(begin, end), value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedError(f"Pad mode={mode} is not covered")
    for ax in range(x.dim()):
        if begin[ax] or end[ax]:
            if mode == "reflect" and max(begin[ax], end[ax]) >= x.shape[ax]:
                raise UnsupportedError("Pad mode=reflect with pads as long as the axis is not covered")
            x = x.index_select(ax, _pad_index(x.shape[ax], begin[ax], end[ax], mode, x.device))
    return x


@op("Tile", since=6)  # Tile-1 takes tiles and axis
def _tile(ctx, x, reps):
    return x.repeat(*_ints(reps))


@op("Trilu", since=14)
def _trilu(ctx, x, k=None, upper=1):
    return (torch.triu if upper else torch.tril)(x, int(k.item()) if k is not None else 0)


@op("Range", since=11, notes="the stash_type attribute (opset 27) is not taken")
def _range(ctx, s, e, d):
    n = max(int(math.ceil((e.item() - s.item()) / d.item())), 0)
    return s + torch.arange(n, device=s.device).to(s.dtype) * d


@op("Shape", since=1)
def _shape(ctx, x, start=0, end=None):
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64, device=x.device)


@op("Size", since=1)
def _size(ctx, x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("OneHot", since=11)  # OneHot-9 gives all-off rows for negative indices, counted from the back here
def _one_hot(ctx, indices, depth, values, axis=-1):
    d = int(depth.reshape(-1)[0].item())
    idx = indices.long()
    idx = torch.where(idx < 0, idx + d, idx)
    valid = (idx >= 0) & (idx < d)
    hot = F.one_hot(torch.where(valid, idx, 0), d) * valid.unsqueeze(-1)
    out = torch.where(hot.bool(), values[1], values[0])
    axis = _axis(axis, indices.dim() + 1)
    return out.movedim(-1, axis)


@op("NonZero", since=9)
def _nonzero(ctx, x):
    return torch.nonzero(x).t().contiguous()


@op("TopK", since=10)  # TopK-1 takes k as an attribute
def _topk(ctx, x, k, axis=-1, largest=1, sorted=1):
    # a stable sort: of equal values the lower index comes first, as the spec wants (torch.topk
    # leaves ties in any order)
    dim = _axis(axis, x.dim())
    values, indices = torch.sort(x, dim=dim, descending=bool(largest), stable=True)
    n = int(k.reshape(-1)[0].item())
    return [values.narrow(dim, 0, n), indices.narrow(dim, 0, n)]


@op("Einsum", since=12)
def _einsum(ctx, *xs, equation):
    return torch.einsum(equation.replace(" ", ""), *xs)


register("Transpose", lambda ctx, x, perm=None: x.permute(*(perm or reversed(range(x.dim())))), since=1)
register("Concat", lambda ctx, *xs, axis: torch.cat(xs, dim=axis), since=4)  # Concat-1 defaults axis to 1


@op("DepthToSpace", since=1)  # mode arrives with 11; its default DCR is what 1 does
def _depth_to_space(ctx, x, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = int(blocksize)
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        raise UnsupportedError(f"DepthToSpace mode {mode!r} is not DCR or CRD")
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth", since=1)  # a mode (DCR, the old behaviour, or CRD) arrives with 28
def _space_to_depth(ctx, x, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = int(blocksize)
    y = x.reshape(n, c, h // b, b, w // b, b)
    if mode == "DCR":
        y = y.permute(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        y = y.permute(0, 1, 3, 5, 2, 4)
    else:
        raise UnsupportedError(f"SpaceToDepth mode {mode!r} is not DCR or CRD")
    return y.reshape(n, c * b * b, h // b, w // b)


@op("EyeLike", since=9)
def _eye_like(ctx, x, dtype=None, k=0):
    from .common import _ONNX_FLOAT, _ONNX_INT

    if dtype is None:
        out = x.dtype
    elif dtype in _ONNX_FLOAT:
        out = ctx.dtype
    elif dtype in _ONNX_INT:
        out = _ONNX_INT[dtype]
    else:
        raise UnsupportedError(f"EyeLike to ONNX type {dtype} is not covered")
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    cols = torch.arange(x.shape[1], device=x.device)[None, :]
    return (cols - rows == int(k)).to(out)


@op("Compress", since=9)
def _compress(ctx, x, condition, axis=None):
    keep = torch.nonzero(condition.reshape(-1).bool()).reshape(-1)
    if axis is None:
        return x.reshape(-1).index_select(0, keep)
    ax = _axis(int(axis), x.dim())
    return x.index_select(ax, keep[keep < x.shape[ax]])


@op("Unique", since=11, count_outputs=True)
def _unique(ctx, x, axis=None, sorted=1, _n=1):
    dim = None if axis is None else _axis(int(axis), x.dim())
    flat = x.reshape(-1) if dim is None else x
    y, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    inverse = inverse.reshape(-1)
    positions = torch.arange(inverse.numel(), device=x.device)
    first = torch.full((counts.numel(),), inverse.numel(), dtype=torch.long, device=x.device)
    first = first.scatter_reduce(0, inverse, positions, "amin")
    if not sorted:  # in the order of first occurrence
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=x.device)
        y = y.index_select(0 if dim is None else dim, order)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return [y, first, inverse, counts][:_n]
