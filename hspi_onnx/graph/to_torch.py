"""Run an ONNX graph with PyTorch operators: the PyTorch adapter's path for models that are
not in the zoo (zoo models run from their own modules).

The graph is interpreted node by node in ``forward``, which takes every graph input (those
that are not initializers, in graph order: :attr:`OnnxModule.input_names`) and returns a
tuple with every graph output (in graph order: :attr:`OnnxModule.output_names`).

Float initializers, constants and casts to a float type take the module's compute dtype, so
``dtype=torch.float16`` runs the whole graph in half precision. A finite float constant
beyond that dtype's range (``torch.finfo(torch.float32).min`` in an attention mask) saturates
to the dtype's largest finite value, as ONNX float16 converters do, instead of becoming an
infinity. :data:`COVERED_OPS` lists the supported ops (default domain only); a model using any
other op, in its graph or in a subgraph, is refused before it runs, naming the missing ops;
attribute values an op does not implement are refused with :class:`UnsupportedError` too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hspi_onnx.errors import UnsupportedError

_ONNX_INT = {2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16, 6: torch.int32, 7: torch.int64,
             9: torch.bool, 12: torch.uint32, 13: torch.uint64}
_ONNX_FLOAT = {1, 10, 11, 16}


def _attr(node) -> dict:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.type == a.TENSOR:
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif a.type == a.STRINGS:
            value = [v.decode("utf-8", "replace") for v in value]
        out[a.name] = value
    return out


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------------------- conv and pools


def _same_pads(auto_pad: str, size: list[int], kernel: list[int], strides: list[int], dilations: list[int],
               pads: list[int]) -> list[int]:
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


def _conv(ctx, x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
          strides=None):
    nd = w.dim() - 2
    if nd not in (1, 2, 3):
        raise UnsupportedError(f"Conv over {nd} spatial axes is not covered")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = _same_pads(auto_pad, list(x.shape[2:]), list(w.shape[2:]), strides, dilations,
                      list(pads or [0] * (2 * nd)))
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        x = F.pad(x, _torch_pad(begin, end))
        begin = [0] * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, strides, begin, dilations, int(group))


def _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad):
    k = list(kernel_shape)
    nd = len(k)
    if nd not in (1, 2, 3):
        raise UnsupportedError(f"pooling over {nd} spatial axes is not covered")
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = _same_pads(auto_pad, list(x.shape[2:]), k, strides, dilations, list(pads or [0] * (2 * nd)))
    return k, nd, strides, dilations, pads[:nd], pads[nd:]


def _max_pool(ctx, x, kernel_shape, strides=None, dilations=None, pads=None, auto_pad="NOTSET", ceil_mode=0,
              storage_order=0, _n=1):
    if _n > 1:
        raise UnsupportedError("MaxPool's Indices output is not covered")
    k, nd, strides, dilations, begin, end = _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    if begin != end or any(2 * p > kk for p, kk in zip(begin, k)):  # torch's limits on padding
        x = F.pad(x, _torch_pad(begin, end), value=-math.inf)
        begin = [0] * nd
    return fn(x, k, strides, begin, dilations, ceil_mode=bool(ceil_mode))


def _avg_pool(ctx, x, kernel_shape, strides=None, pads=None, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0,
              dilations=None):
    k, nd, strides, dilations, begin, end = _pool_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    if any(d != 1 for d in dilations):
        raise UnsupportedError("AveragePool with dilations is not covered")
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


def _gemm(ctx, a_, b_, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a_ = a_.t() if transA else a_
    b_ = b_.t() if transB else b_
    y = torch.matmul(a_, b_)
    y = y * alpha if alpha != 1.0 else y
    return y if c is None else y + (c * beta if beta != 1.0 else c)


# --------------------------------------------------------------------------- shapes and indexing


def _reshape(ctx, x, shape, allowzero=0):
    dims = _ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


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


def _gather(ctx, x, idx, axis=0):
    axis = _axis(axis, x.dim())
    flat = idx.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    out = x.index_select(axis, flat)
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


def _gather_elements(ctx, x, idx, axis=0):
    axis = _axis(axis, x.dim())
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


def _gather_nd(ctx, x, idx, batch_dims=0):
    b = int(batch_dims)
    idx = idx.long()
    k = idx.shape[-1]
    batch_shape = list(x.shape[:b])
    nb = int(np.prod(batch_shape, dtype=np.int64)) if b else 1
    xs = x.reshape([nb] + list(x.shape[b:]))
    ids = idx.reshape([nb, -1, k])
    ids = torch.where(ids < 0, ids + torch.tensor(list(x.shape[b:b + k]), device=x.device), ids)
    rows = torch.arange(nb, device=x.device).view(nb, 1).expand(nb, ids.shape[1])
    out = xs[(rows,) + tuple(ids[..., j] for j in range(k))]
    return out.reshape(list(idx.shape[:-1]) + list(x.shape[b + k:]))


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
    else:
        raise UnsupportedError(f"ScatterND reduction={reduction} is not covered")
    return out


def _split(ctx, x, split=None, axis=0, num_outputs=None, _n=1):
    axis = _axis(axis, x.dim())
    if split is not None:
        sizes = _ints(split) if isinstance(split, torch.Tensor) else list(split)
        return list(torch.split(x, sizes, dim=axis))
    parts = num_outputs or _n
    return list(torch.split(x, math.ceil(x.shape[axis] / parts), dim=axis))


def _expand(ctx, x, shape):
    dims = _ints(shape)
    target = torch.broadcast_shapes(tuple(x.shape), tuple(dims))
    return x.expand(target)


def _constant_of_shape(ctx, shape, value=None):
    v = torch.from_numpy(np.asarray(value if value is not None else np.zeros(1, np.float32)).copy())
    v = _saturate(v, ctx.dtype) if v.is_floating_point() else v
    return v.reshape(-1)[0].to(shape.device).expand(_ints(shape)).clone()


def _unsqueeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if isinstance(axes, torch.Tensor) else list(axes if axes is not None else a["axes"])
    rank = x.dim() + len(ax)
    for i in sorted(_axis(i, rank) for i in ax):
        x = x.unsqueeze(i)
    return x


def _squeeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if isinstance(axes, torch.Tensor) else (list(axes) if axes is not None else a.get("axes"))
    if ax is None:
        return x.squeeze()
    for i in sorted((_axis(i, x.dim()) for i in ax), reverse=True):
        x = x.squeeze(i)
    return x


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
        value = 0.0 if constant_value is None else (
            constant_value.item() if isinstance(constant_value, torch.Tensor) else float(constant_value))
        return F.pad(x, _torch_pad(begin, end), value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedError(f"Pad mode={mode} is not covered")
    for ax in range(x.dim()):
        if begin[ax] or end[ax]:
            if mode == "reflect" and max(begin[ax], end[ax]) >= x.shape[ax]:
                raise UnsupportedError("Pad mode=reflect with pads as long as the axis is not covered")
            x = x.index_select(ax, _pad_index(x.shape[ax], begin[ax], end[ax], mode, x.device))
    return x


def _tile(ctx, x, reps):
    return x.repeat(*_ints(reps))


def _trilu(ctx, x, k=None, upper=1):
    return (torch.triu if upper else torch.tril)(x, int(k.item()) if k is not None else 0)


def _range(ctx, s, e, d):
    n = max(int(math.ceil((e.item() - s.item()) / d.item())), 0)
    return s + torch.arange(n, device=s.device).to(s.dtype) * d


def _shape(ctx, x, start=0, end=None):
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64, device=x.device)


def _size(ctx, x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def _one_hot(ctx, indices, depth, values, axis=-1):
    d = int(depth.reshape(-1)[0].item())
    idx = indices.long()
    idx = torch.where(idx < 0, idx + d, idx)
    valid = (idx >= 0) & (idx < d)
    hot = F.one_hot(torch.where(valid, idx, 0), d) * valid.unsqueeze(-1)
    out = torch.where(hot.bool(), values[1], values[0])
    axis = _axis(axis, indices.dim() + 1)
    return out.movedim(-1, axis)


def _nonzero(ctx, x):
    return torch.nonzero(x).t().contiguous()


def _topk(ctx, x, k, axis=-1, largest=1, sorted=1):
    values, indices = torch.topk(x, int(k.reshape(-1)[0].item()), dim=_axis(axis, x.dim()), largest=bool(largest),
                                 sorted=True)
    return [values, indices]


def _einsum(ctx, *xs, equation):
    return torch.einsum(equation.replace(" ", ""), *xs)


# --------------------------------------------------------------------------- reductions and math


def _reduce(fn):
    def run(ctx, x, axes=None, keepdims=1, noop_with_empty_axes=0, **a):
        ax = _ints(axes) if isinstance(axes, torch.Tensor) else (list(axes) if axes is not None else a.get("axes"))
        if not ax:
            if noop_with_empty_axes:
                return x
            ax = list(range(x.dim()))
        if x.dim() == 0:
            return fn(x.reshape(1), dim=[0], keepdim=False)
        return fn(x, dim=[_axis(i, x.dim()) for i in ax], keepdim=bool(keepdims))
    return run


def _prod(x, dim, keepdim):
    for d in sorted(dim, reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


REDUCERS = {
    "ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax, "ReduceMin": torch.amin,
    "ReduceProd": _prod,
    "ReduceL1": lambda x, dim, keepdim: torch.sum(torch.abs(x), dim=dim, keepdim=keepdim),
    "ReduceL2": lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim)),
    "ReduceSumSquare": lambda x, dim, keepdim: torch.sum(x * x, dim=dim, keepdim=keepdim),
    "ReduceLogSum": lambda x, dim, keepdim: torch.log(torch.sum(x, dim=dim, keepdim=keepdim)),
    "ReduceLogSumExp": torch.logsumexp,
}


def _arg(fn):
    def run(ctx, x, axis=0, keepdims=1, select_last_index=0):
        axis = _axis(axis, x.dim())
        if select_last_index:
            i = fn(torch.flip(x, [axis]), dim=axis, keepdim=bool(keepdims))
            return x.shape[axis] - 1 - i
        return fn(x, dim=axis, keepdim=bool(keepdims))
    return run


def _cumsum(ctx, x, axis, exclusive=0, reverse=0):
    ax = _axis(int(axis.reshape(-1)[0].item()), x.dim())
    y = torch.flip(x, [ax]) if reverse else x
    y = torch.cumsum(y, dim=ax, dtype=x.dtype)
    if exclusive:
        y = torch.cat([torch.zeros_like(y.narrow(ax, 0, 1)), y.narrow(ax, 0, y.shape[ax] - 1)], dim=ax)
    return torch.flip(y, [ax]) if reverse else y


def _cast(ctx, x, to, saturate=1):
    if to in _ONNX_FLOAT:
        return x.to(ctx.dtype)
    if to not in _ONNX_INT:
        raise UnsupportedError(f"Cast to ONNX type {to} is not covered")
    return x.to(_ONNX_INT[to])


def _clip(ctx, x, lo=None, hi=None, **a):
    lo = lo if lo is not None else a.get("min")
    hi = hi if hi is not None else a.get("max")
    lo = lo.to(x.dtype) if isinstance(lo, torch.Tensor) else lo
    hi = hi.to(x.dtype) if isinstance(hi, torch.Tensor) else hi
    if lo is not None and hi is not None and isinstance(lo, torch.Tensor) != isinstance(hi, torch.Tensor):
        lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    return torch.clamp(x, min=lo, max=hi)


def _div(ctx, a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _mod(ctx, a, b, fmod=0):
    if fmod:
        return torch.fmod(a, b)
    if a.is_floating_point() or b.is_floating_point():
        raise UnsupportedError("Mod of floats needs fmod=1 (the ONNX spec)")
    return torch.remainder(a, b)


def _pow(ctx, a, b):
    if a.is_floating_point():
        return torch.pow(a, b.to(a.dtype))
    return torch.pow(a.to(torch.float64), b.to(torch.float64)).to(a.dtype)


def _is_inf(ctx, x, detect_negative=1, detect_positive=1):
    if detect_negative and detect_positive:
        return torch.isinf(x)
    if detect_negative:
        return torch.isneginf(x)
    if detect_positive:
        return torch.isposinf(x)
    return torch.zeros_like(x, dtype=torch.bool)


def _layer_norm(ctx, x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1, _n=1):
    if _n > 1:
        raise UnsupportedError("LayerNormalization's Mean/InvStdDev outputs are not covered")
    axis = _axis(axis, x.dim())
    shape = x.shape[axis:]
    return F.layer_norm(x, shape, scale.expand(shape), None if bias is None else bias.expand(shape), epsilon)


def _batch_norm(ctx, x, s, b, m, v, epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1, _n=1):
    if training_mode or _n > 1:
        raise UnsupportedError("BatchNormalization in training mode is not covered")
    return F.batch_norm(x, m, v, s, b, False, 0.0, epsilon)


def _instance_norm(ctx, x, s, b, epsilon=1e-5):
    return F.instance_norm(x, weight=s, bias=b, eps=epsilon)


def _softmax(fn):
    def run(ctx, x, axis=None):
        if ctx.opset >= 13:
            return fn(x, _axis(-1 if axis is None else axis, x.dim()))
        # opset < 13: the input coerced to 2-D at axis (default 1)
        axis = _axis(1 if axis is None else axis, x.dim())
        return fn(_flatten(ctx, x, axis), 1).reshape(x.shape)
    return run


def _hardmax(ctx, x, axis=-1):
    if ctx.opset < 13:
        raise UnsupportedError("Hardmax before opset 13 is not covered")
    axis = _axis(axis, x.dim())
    return F.one_hot(torch.argmax(x, dim=axis), x.shape[axis]).movedim(-1, axis).to(x.dtype)


def _prelu(ctx, x, slope):
    return torch.where(x < 0, x * slope, x)


def _binary(fn):
    return lambda ctx, a, b: fn(a, b)


def _unary(fn):
    return lambda ctx, x, **a: fn(x)


def _variadic(fn):
    def run(ctx, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return run


def _mean(ctx, *xs):
    return _variadic(torch.add)(ctx, *xs) / len(xs)


# --------------------------------------------------------------------------- recurrent layers


def _activation(name: str, alpha, beta):
    """An ONNX RNN activation (by name) with its alpha/beta (None: the op's default)."""
    n = name.lower()
    a = lambda default: default if alpha is None else alpha  # noqa: E731
    b = lambda default: default if beta is None else beta  # noqa: E731
    table = {
        "sigmoid": (0, lambda x: torch.sigmoid(x)),
        "tanh": (0, lambda x: torch.tanh(x)),
        "relu": (0, lambda x: torch.relu(x)),
        "softsign": (0, lambda x: x / (1 + torch.abs(x))),
        "softplus": (0, lambda x: F.softplus(x)),
        "affine": (2, lambda x: a(1.0) * x + b(0.0)),
        "leakyrelu": (1, lambda x: F.leaky_relu(x, a(0.01))),
        "thresholdedrelu": (1, lambda x: torch.where(x > a(1.0), x, torch.zeros_like(x))),
        "scaledtanh": (2, lambda x: a(1.0) * torch.tanh(b(1.0) * x)),
        "hardsigmoid": (2, lambda x: torch.clamp(a(0.2) * x + b(0.5), 0, 1)),
        "elu": (1, lambda x: F.elu(x, a(1.0))),
    }
    if n not in table:
        raise UnsupportedError(f"RNN activation {name} is not covered")
    return table[n]


def _activations(kind: str, a: dict, dirs: int) -> list:
    """Per direction, the list of activation functions (f, g[, h]) of an RNN/GRU/LSTM node."""
    defaults = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[kind]
    names = list(a.get("activations") or [])
    if not names:
        names = defaults * dirs
    elif len(names) == len(defaults) and dirs == 2:
        names = names * 2
    if len(names) != len(defaults) * dirs:
        raise UnsupportedError(f"{kind} with {len(names)} activations for {dirs} direction(s) is not covered")
    alphas, betas = list(a.get("activation_alpha") or []), list(a.get("activation_beta") or [])
    funcs = []
    for name in names:  # alphas and betas are consumed in order by the activations that take them
        n_params = _activation(name, None, None)[0]
        alpha = alphas.pop(0) if n_params >= 1 and alphas else None
        beta = betas.pop(0) if n_params >= 2 and betas else None
        funcs.append(_activation(name, alpha, beta)[1])
    per = len(defaults)
    return [funcs[d * per:(d + 1) * per] for d in range(dirs)]


def _rnn_common(kind: str, ctx, x, w, r, b, seq_lens, h0, c0, p, a: dict, n_out: int):
    """ONNX RNN, GRU and LSTM (opset 7-22 semantics): returns [Y, Y_h(, Y_c)]."""
    direction = a.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise UnsupportedError(f"{kind} direction={direction} is not covered")
    dirs = 2 if direction == "bidirectional" else 1
    layout = int(a.get("layout", 0))
    clip = a.get("clip")
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    hidden = int(a.get("hidden_size", r.shape[-1]))
    if w.shape[0] != dirs or w.shape[1] != gates * hidden:
        raise UnsupportedError(f"{kind} weights of shape {tuple(w.shape)} do not fit direction={direction}, "
                               f"hidden_size={hidden}")
    funcs = _activations(kind, a, dirs)
    if layout:
        x = x.transpose(0, 1)  # (seq, batch, input)
        h0 = None if h0 is None else h0.transpose(0, 1)
        c0 = None if c0 is None else c0.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    zeros = torch.zeros((dirs, batch, hidden), dtype=x.dtype, device=x.device)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    if seq_lens is not None:
        lens = seq_lens.to(device=x.device, dtype=torch.int64).view(1, batch, 1)
        valid = torch.arange(steps, device=x.device).view(steps, 1, 1) < lens  # (seq, batch, 1)
    else:
        valid = None

    def clipped(v):
        return v if clip is None else torch.clamp(v, -clip, clip)

    ys, hs, cs = [], [], []
    for d in range(dirs):
        f_, g_, h_ = (funcs[d] + [None, None])[:3]
        wd, rd = w[d], r[d]
        wb, rb = (b[d].split(gates * hidden) if b is not None else (None, None))
        xw = torch.matmul(x, wd.t())  # (seq, batch, gates*hidden)
        if wb is not None:
            xw = xw + wb
        if kind == "LSTM" and p is not None:
            p_i, p_o, p_f = p[d].split(hidden)
        else:
            p_i = p_o = p_f = None
        h, c = h0[d], c0[d]
        out = [None] * steps
        order = range(steps) if (direction == "forward" or (direction == "bidirectional" and d == 0)) \
            else range(steps - 1, -1, -1)
        for t in order:
            hr = torch.matmul(h, rd.t())
            if kind == "RNN":
                h_new = f_(clipped(xw[t] + hr + (rb if rb is not None else 0)))
                c_new = c
            elif kind == "GRU":
                if rb is not None:
                    rbz, rbr, rbh = rb.split(hidden)
                else:
                    rbz = rbr = rbh = 0
                xz, xr, xh = xw[t].split(hidden, dim=-1)
                hz, hr_, hh = hr.split(hidden, dim=-1)
                z = f_(clipped(xz + hz + rbz))
                rt = f_(clipped(xr + hr_ + rbr))
                if int(a.get("linear_before_reset", 0)):
                    n = g_(clipped(xh + rt * (hh + rbh)))
                else:
                    rh = rd.split(hidden)[2]
                    n = g_(clipped(xh + torch.matmul(rt * h, rh.t()) + rbh))
                h_new = (1 - z) * n + z * h
                c_new = c
            else:
                gsum = xw[t] + hr + (rb if rb is not None else 0)
                gi, go, gf, gc = gsum.split(hidden, dim=-1)
                if p_i is not None:
                    gi, gf = gi + p_i * c, gf + p_f * c
                i = f_(clipped(gi))
                fg = 1 - i if int(a.get("input_forget", 0)) else f_(clipped(gf))
                c_new = fg * c + i * g_(clipped(gc))
                if p_o is not None:
                    go = go + p_o * c_new
                o = f_(clipped(go))
                h_new = o * h_(c_new)
            if valid is not None:
                h_new = torch.where(valid[t], h_new, h)
                c_new = torch.where(valid[t], c_new, c)
                out[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h, c = h_new, c_new
        ys.append(torch.stack(out, 0))  # (seq, batch, hidden)
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, 1)  # (seq, dirs, batch, hidden)
    y_h, y_c = torch.stack(hs, 0), torch.stack(cs, 0)  # (dirs, batch, hidden)
    if layout:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    outs = [y, y_h] + ([y_c] if kind == "LSTM" else [])
    return outs[:n_out]


def _rnn(kind: str):
    def run(ctx, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None, _n=1, **a):
        if kind != "LSTM" and (c0 is not None or p is not None):
            raise UnsupportedError(f"{kind} takes at most 6 inputs")
        return _rnn_common(kind, ctx, x, w, r, b, seq_lens, h0, c0, p, a, _n)
    return run


# --------------------------------------------------------------------------- the op table


OPS = {
    "Abs": _unary(torch.abs), "Ceil": _unary(torch.ceil), "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp), "Floor": _unary(torch.floor), "Log": _unary(torch.log),
    "Neg": _unary(torch.neg), "Not": _unary(torch.logical_not), "Reciprocal": _unary(torch.reciprocal),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Sqrt": _unary(torch.sqrt),
    "Tanh": _unary(torch.tanh), "HardSwish": _unary(F.hardswish), "Identity": _unary(lambda x: x),
    "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Tan": _unary(torch.tan),
    "Asin": _unary(torch.asin), "Acos": _unary(torch.acos), "Atan": _unary(torch.atan),
    "Sinh": _unary(torch.sinh), "Cosh": _unary(torch.cosh), "Sign": _unary(torch.sign),
    "Round": _unary(torch.round),  # half to even, as ONNX
    "Softplus": _unary(lambda x: torch.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))),
    "Softsign": _unary(F.softsign), "Mish": _unary(F.mish),
    "IsNaN": _unary(torch.isnan), "IsInf": _is_inf,
    "Elu": lambda ctx, x, alpha=1.0: F.elu(x, alpha),
    "Selu": lambda ctx, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875:
        gamma * torch.where(x > 0, x, alpha * torch.expm1(x)),
    "Celu": lambda ctx, x, alpha=1.0: F.celu(x, alpha),
    "ThresholdedRelu": lambda ctx, x, alpha=1.0: torch.where(x > alpha, x, torch.zeros_like(x)),
    "PRelu": _prelu,
    "Dropout": lambda ctx, x, *rest, _n=1, **a: [x, torch.ones_like(x, dtype=torch.bool)][:_n],
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _div,
    "Mod": _mod, "Pow": _pow,
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or), "Xor": _binary(torch.logical_xor),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Mean": _mean,
    "Where": lambda ctx, c, a, b: torch.where(c.bool(), a, b),
    "MatMul": _binary(torch.matmul), "Gemm": _gemm, "Einsum": _einsum,
    "Conv": _conv, "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "GlobalAveragePool": lambda ctx, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda ctx, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax), "Hardmax": _hardmax,
    "LeakyRelu": lambda ctx, x, alpha=0.01: F.leaky_relu(x, alpha),
    "HardSigmoid": lambda ctx, x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0, 1),
    "Gelu": lambda ctx, x, approximate="none": F.gelu(x, approximate=approximate),
    "Clip": _clip,
    "Flatten": _flatten,
    "Reshape": _reshape, "Transpose": lambda ctx, x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Shape": _shape, "Size": _size,
    "Slice": _slice, "Gather": _gather, "GatherElements": _gather_elements, "GatherND": _gather_nd,
    "ScatterElements": _scatter_elements, "ScatterND": _scatter_nd, "Split": _split,
    "Concat": lambda ctx, *xs, axis: torch.cat(xs, dim=axis),
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Cast": _cast,
    "CastLike": lambda ctx, x, like, saturate=1: x.to(like.dtype), "Expand": _expand,
    "ConstantOfShape": _constant_of_shape, "Pad": _pad, "OneHot": _one_hot, "NonZero": _nonzero,
    "TopK": _topk,
    "Range": _range, "Trilu": _trilu, "Tile": _tile,
    "ArgMax": _arg(torch.argmax), "ArgMin": _arg(torch.argmin), "CumSum": _cumsum,
    "RNN": _rnn("RNN"), "GRU": _rnn("GRU"), "LSTM": _rnn("LSTM"),
    **{name: _reduce(fn) for name, fn in REDUCERS.items()},
}
# ops the interpreter runs itself (constants are folded into buffers, If runs a subgraph)
COVERED_OPS = sorted(set(OPS) | {"Constant", "If"})
_MULTI_OUTPUT = {"Split", "MaxPool", "LayerNormalization", "BatchNormalization", "Dropout", "RNN", "GRU", "LSTM"}


def _saturate(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float tensor in ``dtype``; finite values beyond its range become its largest finite value."""
    if dtype in (torch.float16, torch.bfloat16) and t.is_floating_point():
        big = torch.finfo(dtype).max
        t = torch.where(torch.isfinite(t), t.clamp(-big, big), t)
    return t.to(dtype)


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    array = np.array(array, copy=True)
    if array.dtype == np.float16 or array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    t = torch.from_numpy(array)
    return _saturate(t, dtype) if t.is_floating_point() else t


def _ops_of(graph) -> set[str]:
    """Every op type in a graph and its subgraphs."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for a in node.attribute:
            if a.type == a.GRAPH:
                ops |= _ops_of(a.g)
            for g in a.graphs:
                ops |= _ops_of(g)
    return ops


class _Graph:
    """A compiled (sub)graph: its nodes and the names of its outputs."""

    def __init__(self, nodes: list, outputs: list[str]) -> None:
        self.nodes, self.outputs = nodes, outputs


class OnnxModule(nn.Module):
    """An ONNX graph as a torch module computing in ``dtype``.

    ``forward(*inputs)`` takes the graph inputs in :attr:`input_names` order (float tensors are
    cast to ``dtype``) and returns a tuple of the graph outputs in :attr:`output_names` order.
    """

    def __init__(self, model, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        graph = model.graph
        self.opset = 1
        for imp in model.opset_import:
            if imp.domain not in ("", "ai.onnx"):
                raise UnsupportedError(f"ONNX domain {imp.domain!r} is not covered by the PyTorch converter")
            self.opset = int(imp.version)
        missing = sorted(_ops_of(graph) - set(COVERED_OPS))
        if missing:
            raise UnsupportedError(f"the ONNX-to-PyTorch converter does not cover: {', '.join(missing)}")
        self.dtype = dtype
        self._names: dict[str, str] = {}
        self._count = 0
        self.graph = self._compile(graph)
        self.input_names = [i.name for i in graph.input if i.name not in self._names]
        self.output_names = [o.name for o in graph.output]

    def _compile(self, graph) -> _Graph:
        from onnx import numpy_helper

        for init in graph.initializer:
            self._add_const(init.name, numpy_helper.to_array(init))
        nodes = []
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedError(f"ONNX domain {node.domain!r} is not covered by the PyTorch converter")
            attrs = _attr(node)
            if node.op_type == "Constant":
                self._add_const(node.output[0], self._constant(attrs))
                continue
            if node.op_type == "If":
                attrs = {"then_branch": self._compile(attrs["then_branch"]),
                         "else_branch": self._compile(attrs["else_branch"])}
            elif node.op_type in _MULTI_OUTPUT:
                attrs["_n"] = len(node.output)
            nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        return _Graph(nodes, [o.name for o in graph.output])

    @staticmethod
    def _constant(attrs: dict) -> np.ndarray:
        value = attrs.get("value")
        if value is None:
            for key in ("value_float", "value_floats", "value_int", "value_ints"):
                if key in attrs:
                    value = np.asarray(attrs[key], np.float32 if "float" in key else np.int64)
        if value is None:
            raise UnsupportedError("Constant without a numeric value is not covered")
        return value

    def _add_const(self, name: str, array: np.ndarray) -> None:
        attr = f"c{self._count}"
        self._count += 1
        self.register_buffer(attr, _tensor(array, self.dtype), persistent=False)
        self._names[name] = attr

    def _run(self, graph: _Graph, env: dict) -> list:
        for op, ins, outs, attrs in graph.nodes:
            args = [env[i] if i else None for i in ins]
            while args and args[-1] is None:
                args.pop()
            if op == "If":
                branch = attrs["then_branch"] if bool(args[0].reshape(-1)[0]) else attrs["else_branch"]
                result = self._run(branch, dict(env))
            else:
                result = OPS[op](self, *args, **attrs)
            if isinstance(result, (list, tuple)):
                env.update((n, v) for n, v in zip(outs, result) if n)
            else:
                env[outs[0]] = result
        return [env[o] for o in graph.outputs]

    def forward(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) > len(self.input_names):
            raise TypeError(f"the graph takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        feeds = dict(zip(self.input_names, inputs))
        for name, value in named.items():
            if name not in self.input_names or name in feeds:
                raise TypeError(f"unexpected or repeated graph input {name!r}")
            feeds[name] = value
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise TypeError(f"missing graph inputs: {', '.join(missing)}")
        env = {name: getattr(self, attr) for name, attr in self._names.items()}
        for name, x in feeds.items():
            x = torch.as_tensor(x)
            env[name] = x.to(self.dtype) if x.is_floating_point() else x
        return tuple(self._run(self.graph, env))


def convert(model, dtype: torch.dtype = torch.float32) -> OnnxModule:
    return OnnxModule(model, dtype).eval()
