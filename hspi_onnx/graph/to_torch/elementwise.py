"""Reductions, casts, element-wise math, normalizations, softmax, activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hspi_onnx.errors import UnsupportedError

from .common import _ONNX_FLOAT, _ONNX_INT, _axis, _ints
from .shapes import _flatten

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
    "ReduceMean": torch.mean,
    "ReduceSum": torch.sum,
    "ReduceMax": torch.amax,
    "ReduceMin": torch.amin,
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
