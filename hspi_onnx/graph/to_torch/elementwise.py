"""Reductions, casts, element-wise math, normalizations, softmax, activations, Dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hspi_onnx.errors import UnsupportedError

from .common import _ONNX_FLOAT, _ONNX_INT, _axis, _ints
from .registry import registrar
from .shapes import _flatten

op, register = registrar(__name__)

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
        dims = [_axis(i, x.dim()) for i in ax]
        if fn in (torch.amax, torch.amin) and any(x.shape[d] == 0 for d in dims):
            return _empty_extremum(x, dims, bool(keepdims), fn is torch.amax)
        return fn(x, dim=dims, keepdim=bool(keepdims))

    return run


def _empty_extremum(x: torch.Tensor, dims: list[int], keepdim: bool, largest: bool) -> torch.Tensor:
    """ReduceMax/ReduceMin over an empty axis: the identity of the reduction (the spec: the
    smallest, or largest, value of the type; false, or true, for booleans)."""
    shape = [1 if d in dims else n for d, n in enumerate(x.shape) if keepdim or d not in dims]
    if x.dtype == torch.bool:
        fill: float | int | bool = not largest
    elif x.is_floating_point():
        fill = -float("inf") if largest else float("inf")
    else:
        info = torch.iinfo(x.dtype)
        fill = info.min if largest else info.max
    return torch.full(shape, fill, dtype=x.dtype, device=x.device)


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


def _cumulative(fn, identity):
    """CumSum / CumProd: along the axis input, exclusive (shifted in by the identity), reversed."""

    def run(ctx, x, axis, exclusive=0, reverse=0):
        ax = _axis(int(axis.reshape(-1)[0].item()), x.dim())
        y = torch.flip(x, [ax]) if reverse else x
        y = fn(y, dim=ax, dtype=x.dtype)
        if exclusive:
            first = torch.full_like(y.narrow(ax, 0, 1), identity)
            y = torch.cat([first, y.narrow(ax, 0, y.shape[ax] - 1)], dim=ax)
        return torch.flip(y, [ax]) if reverse else y

    return run


register("CumSum", _cumulative(torch.cumsum, 0), since=11)
register("CumProd", _cumulative(torch.cumprod, 1), since=26)


@op(
    "Cast",
    since=6,  # Cast-1 names the target type as a string
    notes="a float target (float, double, float16, bfloat16) takes the module's compute dtype; targets other than "
    "those, bool and the 8- to 64-bit integers (string, 4-bit integers, float8, ...) are refused",
)
def _cast(ctx, x, to, saturate=1):
    if to in _ONNX_FLOAT:
        return x.to(ctx.dtype)
    if to not in _ONNX_INT:
        raise UnsupportedError(f"Cast to ONNX type {to} is not covered")
    if to in (4, 12):  # UINT16, UINT32: held as int64, wrapped by the interpreter
        return x.to(torch.int64)
    if to == 13:
        raise UnsupportedError("Cast to UINT64 is not covered (int64 cannot hold it)")
    return x.to(_ONNX_INT[to])


@op("Clip", since=1)
def _clip(ctx, x, lo=None, hi=None, **a):
    lo = lo if lo is not None else a.get("min")
    hi = hi if hi is not None else a.get("max")
    lo = lo.to(x.dtype) if isinstance(lo, torch.Tensor) else lo
    hi = hi.to(x.dtype) if isinstance(hi, torch.Tensor) else hi
    if lo is not None and hi is not None and isinstance(lo, torch.Tensor) != isinstance(hi, torch.Tensor):
        lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    if lo is None and hi is None:
        return x
    return torch.clamp(x, min=lo, max=hi)


@op("Div", since=7)  # Div-1 and -6 take broadcast and axis attributes
def _div(ctx, a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@op("Mod", since=10, notes="fmod=0 on floats (allowed from Mod-28): the remainder takes the divisor's sign")
def _mod(ctx, a, b, fmod=0):
    if fmod:
        return torch.fmod(a, b)
    if not a.is_floating_point():
        return torch.remainder(a, b)
    # a finite x modulo +-inf is x when their signs agree (or x is 0), else that infinity, as
    # eager PyTorch and Python give; torch 2.13's inductor computes x - floor(x / y) * y and
    # returns nan there (onnx's test_mod_float_edge_cases_fmod_0_*)
    at_inf = torch.where((a == 0) | ((a > 0) == (b > 0)), a, b.to(a.dtype))
    return torch.where(torch.isinf(b) & torch.isfinite(a), at_inf, torch.remainder(a, b))


@op("Pow", since=7)  # Pow-1 takes broadcast and axis attributes
def _pow(ctx, a, b):
    if a.is_floating_point():
        return torch.pow(a, b.to(a.dtype))
    return torch.pow(a.to(torch.float64), b.to(torch.float64)).to(a.dtype)


@op("IsInf", since=10)
def _is_inf(ctx, x, detect_negative=1, detect_positive=1):
    if detect_negative and detect_positive:
        return torch.isinf(x)
    if detect_negative:
        return torch.isneginf(x)
    if detect_positive:
        return torch.isposinf(x)
    return torch.zeros_like(x, dtype=torch.bool)


@op("LayerNormalization", since=17, count_outputs=True)
def _layer_norm(ctx, x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1, _n=1):
    axis = _axis(axis, x.dim())
    shape = x.shape[axis:]
    y = F.layer_norm(x, shape, scale.expand(shape), None if bias is None else bias.expand(shape), epsilon)
    if _n == 1:
        return y
    dims = list(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True) + epsilon)
    return [y, mean, inv_std][:_n]


@op("GroupNormalization", since=21)  # 18's scale and bias are per group, 21's per channel
def _group_norm(ctx, x, scale, bias, num_groups, epsilon=1e-5, stash_type=1):
    return F.group_norm(x, int(num_groups), scale, bias, epsilon)


@op("RMSNormalization", since=23)
def _rms_norm(ctx, x, scale, axis=-1, epsilon=1e-5, stash_type=1):
    dims = list(range(_axis(axis, x.dim()), x.dim()))
    return x * torch.rsqrt((x * x).mean(dim=dims, keepdim=True) + epsilon) * scale


@op("LpNormalization", since=1)
def _lp_norm(ctx, x, axis=-1, p=2):
    if p not in (1, 2):
        raise UnsupportedError(f"LpNormalization with p={p} is not covered (the spec allows 1 and 2)")
    norm = torch.linalg.vector_norm(x, ord=p, dim=_axis(axis, x.dim()), keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(x), x / norm)


# BatchNormalization-1 and -6 take is_test (default 0: training mode), -1 consumed_inputs too
@op(
    "BatchNormalization",
    since=7,
    count_outputs=True,
    notes="training mode from opset 14 (the batch's statistics, updated running mean and variance); "
    "before it, the extra outputs are refused, and so is spatial=0 (opset 7 and 8)",
)
def _batch_norm(ctx, x, s, b, m, v, epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1, _n=1):
    if training_mode and ctx.opset >= 14:
        axes = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean, var = x.mean(dim=axes), x.var(dim=axes, unbiased=False)  # the population variance, as the spec
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + epsilon) * s.reshape(shape) + b.reshape(shape)
        outs = (y, m * momentum + mean * (1 - momentum), v * momentum + var * (1 - momentum))
        return outs[:_n] if _n > 1 else y
    if training_mode or _n > 1:
        raise UnsupportedError(f"BatchNormalization in training mode is not covered at opset {ctx.opset} (from 14)")
    return F.batch_norm(x, m, v, s, b, False, 0.0, epsilon)


@op("InstanceNormalization", since=6)
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


@op("Hardmax", since=13)  # before 13 the input is coerced to 2-D; refused here too
def _hardmax(ctx, x, axis=-1):
    if ctx.opset < 13:
        raise UnsupportedError("Hardmax before opset 13 is not covered")
    axis = _axis(axis, x.dim())
    return F.one_hot(torch.argmax(x, dim=axis), x.shape[axis]).movedim(-1, axis).to(x.dtype)


@op("PRelu", since=6)
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


# ReduceX-1 take axes as an attribute, ReduceSum-13 and the others from 18 as an input; both are
# taken. With noop_with_empty_axes=1 and no axes the input is returned unchanged: what ReduceMean,
# ReduceMax, ReduceMin, ReduceProd, ReduceSum and ReduceLogSumExp give, not the element step
# (abs, square, log) the others still apply.
_NOOP_NOTE = "noop_with_empty_axes=1 without axes returns the input unchanged (the ONNX definition applies %s)"
_NOOP_STEP = {"ReduceL1": "abs", "ReduceL2": "abs", "ReduceSumSquare": "the square", "ReduceLogSum": "log"}
for _name, _fn in REDUCERS.items():
    register(_name, _reduce(_fn), since=1, notes=_NOOP_NOTE % _NOOP_STEP[_name] if _name in _NOOP_STEP else "")
register("ArgMax", _arg(torch.argmax), since=1)
register("ArgMin", _arg(torch.argmin), since=1)

# unary math and activations: _unary takes (and ignores) the consumed_inputs of the opset-1 versions
for _name, _since, _fn in [
    ("Abs", 1, torch.abs),
    ("Ceil", 1, torch.ceil),
    ("Erf", 9, torch.erf),
    ("Exp", 1, torch.exp),
    ("Floor", 1, torch.floor),
    ("Log", 1, torch.log),
    ("Neg", 1, torch.neg),
    ("Not", 1, torch.logical_not),
    ("Reciprocal", 1, torch.reciprocal),
    ("Relu", 1, torch.relu),
    ("Sigmoid", 1, torch.sigmoid),
    ("Sqrt", 1, torch.sqrt),
    ("Tanh", 1, torch.tanh),
    ("HardSwish", 14, F.hardswish),
    ("Identity", 1, lambda x: x),
    ("Sin", 7, torch.sin),
    ("Cos", 7, torch.cos),
    ("Tan", 7, torch.tan),
    ("Asin", 7, torch.asin),
    ("Acos", 7, torch.acos),
    ("Atan", 7, torch.atan),
    ("Sinh", 9, torch.sinh),
    ("Cosh", 9, torch.cosh),
    ("Asinh", 9, torch.asinh),
    ("Acosh", 9, torch.acosh),
    ("Atanh", 9, torch.atanh),
    ("BitwiseNot", 18, torch.bitwise_not),
    ("Sign", 9, torch.sign),
    ("Round", 11, torch.round),  # half to even, as ONNX
    ("Softplus", 1, lambda x: torch.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))),
    ("Softsign", 1, F.softsign),
    ("Mish", 18, F.mish),
    ("IsNaN", 9, torch.isnan),
]:
    register(_name, _unary(_fn), since=_since)

# with attributes; Elu, Selu, LeakyRelu and HardSigmoid from 6 (the opset-1 versions take
# consumed_inputs, and Selu-1 has other defaults)
register("Elu", lambda ctx, x, alpha=1.0: F.elu(x, alpha), since=6)
register(
    "Selu",
    lambda ctx, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875: (
        gamma * torch.where(x > 0, x, alpha * torch.expm1(x))
    ),
    since=6,
)
register("Celu", lambda ctx, x, alpha=1.0: F.celu(x, alpha), since=12)
register("ThresholdedRelu", lambda ctx, x, alpha=1.0: torch.where(x > alpha, x, torch.zeros_like(x)), since=10)
register("LeakyRelu", lambda ctx, x, alpha=0.01: F.leaky_relu(x, alpha), since=6)
register("HardSigmoid", lambda ctx, x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0, 1), since=6)
register("Gelu", lambda ctx, x, approximate="none": F.gelu(x, approximate=approximate), since=20)


# Dropout-1 and -6 default to training (is_test=0); Dropout-7 to -9 give a float mask, this a bool one
@op(
    "Dropout",
    since=10,
    count_outputs=True,
    notes="inference: the output is the input, the mask all true; training mode with a ratio above 0 is refused",
)
def _dropout(ctx, x, ratio=None, training_mode=None, _n=1, **a):
    if training_mode is not None and bool(training_mode.reshape(-1)[0]):
        if ratio is None or float(ratio.reshape(-1)[0]) > 0:
            raise UnsupportedError("Dropout in training mode (a random mask) is not covered")
    return [x, torch.ones_like(x, dtype=torch.bool)][:_n]


# binary and variadic, with multidirectional broadcasting: the binary ops from 7 (before, they
# take broadcast and axis attributes), the variadic ones from 6 (equal shapes; consumed_inputs before)
for _name, _since, _fn in [
    ("Add", 7, torch.add),
    ("Sub", 7, torch.sub),
    ("Mul", 7, torch.mul),
    ("Equal", 7, torch.eq),
    ("Less", 7, torch.lt),
    ("Greater", 7, torch.gt),
    ("LessOrEqual", 12, torch.le),
    ("GreaterOrEqual", 12, torch.ge),
    ("And", 7, torch.logical_and),
    ("Or", 7, torch.logical_or),
    ("Xor", 7, torch.logical_xor),
]:
    register(_name, _binary(_fn), since=_since)
register("BitwiseAnd", lambda ctx, a, b: torch.bitwise_and(a, b), since=18)
register("BitwiseOr", lambda ctx, a, b: torch.bitwise_or(a, b), since=18)
register("BitwiseXor", lambda ctx, a, b: torch.bitwise_xor(a, b), since=18)


@op("BitShift", since=11)
def _bit_shift(ctx, x, y, direction):
    if direction == "LEFT":
        return torch.bitwise_left_shift(x, y.to(x.dtype))
    if direction == "RIGHT":
        return torch.bitwise_right_shift(x, y.to(x.dtype))
    raise UnsupportedError(f"BitShift direction {direction!r} is not LEFT or RIGHT")


register("Max", _variadic(torch.maximum), since=6)
register("Min", _variadic(torch.minimum), since=6)
register("Sum", _variadic(torch.add), since=6)
register("Mean", _mean, since=6)
register("Where", lambda ctx, c, a, b: torch.where(c.bool(), a, b), since=9)
register("CastLike", lambda ctx, x, like, saturate=1: x.to(like.dtype), since=15)
register("Softmax", _softmax(torch.softmax), since=1)  # before 13: coerced to 2-D at axis
register("LogSoftmax", _softmax(torch.log_softmax), since=1)


def _nll(log_prob, target, weight, ignore_index, reduction):
    if reduction not in ("none", "sum", "mean"):
        raise UnsupportedError(f"loss reduction {reduction!r} is not covered")
    target = target.long()
    ignore = int(ignore_index) if ignore_index is not None else -(2**62)  # the spec: none by default
    return F.nll_loss(
        log_prob,
        target,
        None if weight is None else weight.to(log_prob.dtype),
        ignore_index=ignore,
        reduction=reduction,
    )


@op("NegativeLogLikelihoodLoss", since=12)
def _nll_loss(ctx, x, target, weight=None, ignore_index=None, reduction="mean"):
    return _nll(x, target, weight, ignore_index, reduction)


@op("SoftmaxCrossEntropyLoss", since=12, count_outputs=True)
def _softmax_cross_entropy(ctx, scores, labels, weights=None, ignore_index=None, reduction="mean", _n=1):
    log_prob = torch.log_softmax(scores, dim=1)
    return [_nll(log_prob, labels, weights, ignore_index, reduction), log_prob][:_n]


register("Swish", lambda ctx, x, alpha=1.0: x * torch.sigmoid(alpha * x), since=24)
register(
    "Shrink",
    lambda ctx, x, bias=0.0, lambd=0.5: torch.where(
        x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x))
    ),
    since=9,
)
register("Det", lambda ctx, x: torch.linalg.det(x), since=11)
register(
    "LRN",
    lambda ctx, x, size, alpha=0.0001, beta=0.75, bias=1.0: F.local_response_norm(x, int(size), alpha, beta, bias),
    since=1,
)


@op("MeanVarianceNormalization", since=9)
def _mvn(ctx, x, axes=(0, 2, 3)):
    dims = [_axis(a, x.dim()) for a in axes]
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-9)


def _window(kind: str):
    def run(ctx, size, output_datatype=1, periodic=1):
        n = int(size.reshape(-1)[0])
        denom = n if periodic else n - 1
        k = torch.arange(n, dtype=torch.float64)
        phase = 2 * torch.pi * k / denom
        if kind == "hann":
            w = 0.5 - 0.5 * torch.cos(phase)
        elif kind == "hamming":
            w = 25 / 46 - (1 - 25 / 46) * torch.cos(phase)
        else:
            w = 0.42 - 0.5 * torch.cos(phase) + 0.08 * torch.cos(2 * phase)
        if output_datatype in _ONNX_FLOAT:
            return w.to(ctx.dtype)
        if output_datatype in _ONNX_INT:
            return w.to(_ONNX_INT[output_datatype])
        raise UnsupportedError(f"a window of ONNX type {output_datatype} is not covered")

    return run


register("HannWindow", _window("hann"), since=17)
register("HammingWindow", _window("hamming"), since=17)
register("BlackmanWindow", _window("blackman"), since=17)


@op("BitCast", since=26)
def _bit_cast(ctx, x, to):
    target = _ONNX_INT.get(to) or {1: torch.float32, 10: torch.float16, 11: torch.float64}.get(to)
    if target is None or target.itemsize != x.dtype.itemsize:
        raise UnsupportedError(f"BitCast from {x.dtype} to ONNX type {to} is not covered")
    return x.view(target)


def _per_axis(v: torch.Tensor, x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """A scale or zero point shaped to broadcast against ``x``: a scalar, one per slice of
    ``axis``, or (with ``block_size``) one per block of that axis."""
    if v.dim() == 0 or v.numel() == 1 and not block_size:
        return v.reshape(())
    ax = _axis(axis, x.dim())
    if block_size:
        return v.repeat_interleave(int(block_size), dim=ax).narrow(ax, 0, x.shape[ax])
    shape = [1] * x.dim()
    shape[ax] = -1
    return v.reshape(shape)


def _int_range(dtype: torch.dtype) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return info.min, info.max


@op(
    "QuantizeLinear",
    since=10,
    notes="per tensor, per axis, blocked; 8-, 16- and 32-bit integer outputs (float8 and 4-bit ones are refused); "
    "rounding half to even, saturating",
)
def _quantize(ctx, x, scale, zero_point=None, axis=1, block_size=0, output_dtype=0, saturate=1, precision=0):
    if zero_point is not None:
        out = zero_point.dtype
    elif output_dtype:
        if output_dtype not in _ONNX_INT or output_dtype == 9:
            raise UnsupportedError(f"QuantizeLinear to ONNX type {output_dtype} is not covered")
        out = _ONNX_INT[output_dtype]
    else:
        out = torch.uint8
    if out.is_floating_point or out == torch.bool:
        raise UnsupportedError(f"QuantizeLinear to {out} is not covered")
    # the division in the input's dtype, as the reference does (float64 moves some .5 ties)
    s = _per_axis(scale, x, axis, block_size).to(x.dtype)
    q = torch.round(x / s).to(torch.float64)
    if zero_point is not None:
        q = q + _per_axis(zero_point, x, axis, block_size).to(torch.float64)
    # a zero point held as int64 is a UINT16 one (QuantizeLinear's output types hold no 64-bit
    # integer, and UINT16 values are held as int64): saturate to its range
    lo, hi = (0, 65535) if out == torch.int64 else _int_range(out)
    return q.clamp(lo, hi).to(out)


@op("DequantizeLinear", since=10, notes="per tensor, per axis, blocked; integer inputs of 8 to 32 bits")
def _dequantize(ctx, x, scale, zero_point=None, axis=1, block_size=0, output_dtype=0):
    if x.is_floating_point():
        raise UnsupportedError(f"DequantizeLinear of {x.dtype} is not covered")
    v = x.to(torch.float64)
    if zero_point is not None:
        v = v - _per_axis(zero_point, x, axis, block_size).to(torch.float64)
    return (v * _per_axis(scale, x, axis, block_size).to(torch.float64)).to(ctx.dtype)


@op("DynamicQuantizeLinear", since=11, count_outputs=True)
def _dynamic_quantize(ctx, x, _n=1):
    lo = torch.clamp(x.min(), max=0)
    hi = torch.clamp(x.max(), min=0)
    scale = (hi - lo) / 255
    zp = torch.round(0 - lo / scale).clamp(0, 255)
    y = (torch.round(x / scale) + zp).clamp(0, 255)
    return [y.to(torch.uint8), scale.to(ctx.dtype), zp.to(torch.uint8)][:_n]
