"""Run an ONNX graph with PyTorch operators: the PyTorch adapter's path for models that are
not in the zoo (zoo models run from their own modules).

The graph is interpreted node by node in ``forward``. Float initializers, constants and casts
to a float type take the module's compute dtype, so ``dtype=torch.float16`` runs the whole
graph in half precision. :data:`COVERED_OPS` lists the supported ops (default domain only);
a model using any other op is refused before it runs, naming the missing ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hspi_onnx.errors import UnsupportedError

_ONNX_INT = {2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64, 9: torch.bool}
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
        out[a.name] = value
    return out


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _conv(ctx, x, w, b=None, **a):
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError(f"Conv auto_pad={a['auto_pad']} is not covered")
    nd = w.dim() - 2
    pads = list(a.get("pads", [0] * (2 * nd)))
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (begin[i], end[i])])
        begin = [0] * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, list(a.get("strides", [1] * nd)), begin, list(a.get("dilations", [1] * nd)),
              int(a.get("group", 1)))


def _pool(kind):
    def run(ctx, x, **a):
        k = list(a["kernel_shape"])
        nd = len(k)
        pads = list(a.get("pads", [0] * (2 * nd)))
        if pads[:nd] != pads[nd:]:
            raise UnsupportedError(f"{kind} with asymmetric pads is not covered")
        strides, ceil = list(a.get("strides", [1] * nd)), bool(a.get("ceil_mode", 0))
        if kind == "MaxPool":
            return F.max_pool2d(x, k, strides, pads[:nd], ceil_mode=ceil)
        return F.avg_pool2d(x, k, strides, pads[:nd], ceil_mode=ceil,
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def _gemm(ctx, a_, b_, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a_ = a_.t() if transA else a_
    b_ = b_.t() if transB else b_
    y = torch.matmul(a_, b_)
    y = y * alpha if alpha != 1.0 else y
    return y if c is None else y + (c * beta if beta != 1.0 else c)


def _reshape(ctx, x, shape, allowzero=0):
    dims = _ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _slice(ctx, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) or list(range(len(starts)))
    steps = _ints(steps) or [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise UnsupportedError("Slice with a non-positive step is not covered")
        n = x.shape[_axis(ax, x.dim())]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        index[_axis(ax, x.dim())] = slice(s, e, st)
    return x[tuple(index)]


def _gather(ctx, x, idx, axis=0):
    axis = _axis(axis, x.dim())
    flat = idx.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    out = x.index_select(axis, flat)
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


def _split(ctx, x, split=None, axis=0, num_outputs=None, _n=1):
    axis = _axis(axis, x.dim())
    if split is not None:
        sizes = _ints(split) if isinstance(split, torch.Tensor) else list(split)
        return list(torch.split(x, sizes, dim=axis))
    parts = num_outputs or _n
    return list(torch.split(x, math.ceil(x.shape[axis] / parts), dim=axis))


def _reduce(fn):
    def run(ctx, x, axes=None, keepdims=1, noop_with_empty_axes=0, **a):
        ax = _ints(axes) if isinstance(axes, torch.Tensor) else (list(axes) if axes is not None else a.get("axes"))
        if not ax:
            if noop_with_empty_axes:
                return x
            ax = list(range(x.dim()))
        return fn(x, dim=[_axis(i, x.dim()) for i in ax], keepdim=bool(keepdims))
    return run


def _cast(ctx, x, to):
    if to in _ONNX_FLOAT:
        return x.to(ctx.dtype)
    if to not in _ONNX_INT:
        raise UnsupportedError(f"Cast to ONNX type {to} is not covered")
    return x.to(_ONNX_INT[to])


def _clip(ctx, x, lo=None, hi=None, **a):
    lo = lo if lo is not None else a.get("min")
    hi = hi if hi is not None else a.get("max")
    return torch.clamp(x, min=lo if lo is None or not isinstance(lo, torch.Tensor) else lo.to(x.dtype),
                       max=hi if hi is None or not isinstance(hi, torch.Tensor) else hi.to(x.dtype))


def _div(ctx, a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _expand(ctx, x, shape):
    dims = _ints(shape)
    target = torch.broadcast_shapes(tuple(x.shape), tuple(dims))
    return x.expand(target)


def _constant_of_shape(ctx, shape, value=None):
    v = torch.from_numpy(np.asarray(value if value is not None else np.zeros(1, np.float32)).copy())
    v = v.to(ctx.dtype) if v.is_floating_point() else v
    return v.reshape(-1)[0].expand(_ints(shape)).clone()


def _unsqueeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if axes is not None else list(a["axes"])
    rank = x.dim() + len(ax)
    for i in sorted(_axis(i, rank) for i in ax):
        x = x.unsqueeze(i)
    return x


def _squeeze(ctx, x, axes=None, **a):
    ax = _ints(axes) if axes is not None else a.get("axes")
    if ax is None:
        return x.squeeze()
    for i in sorted((_axis(i, x.dim()) for i in ax), reverse=True):
        x = x.squeeze(i)
    return x


def _layer_norm(ctx, x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    axis = _axis(axis, x.dim())
    return F.layer_norm(x, x.shape[axis:], scale, bias, epsilon)


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


OPS = {
    "Abs": _unary(torch.abs), "Ceil": _unary(torch.ceil), "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp), "Floor": _unary(torch.floor), "Log": _unary(torch.log),
    "Neg": _unary(torch.neg), "Not": _unary(torch.logical_not), "Reciprocal": _unary(torch.reciprocal),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Sqrt": _unary(torch.sqrt),
    "Tanh": _unary(torch.tanh), "HardSwish": _unary(F.hardswish), "Identity": _unary(lambda x: x),
    "Dropout": lambda ctx, x, *rest, **a: x,
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _div,
    "Pow": lambda ctx, a, b: torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Where": lambda ctx, c, a, b: torch.where(c.bool(), a, b),
    "MatMul": _binary(torch.matmul), "Gemm": _gemm,
    "Conv": _conv, "MaxPool": _pool("MaxPool"), "AveragePool": _pool("AveragePool"),
    "GlobalAveragePool": lambda ctx, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda ctx, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": lambda ctx, x, s, b, m, v, epsilon=1e-5, **a: F.batch_norm(x, m, v, s, b, False, 0.0, epsilon),
    "LayerNormalization": _layer_norm,
    "Softmax": lambda ctx, x, axis=-1: torch.softmax(x, _axis(axis, x.dim())),
    "LogSoftmax": lambda ctx, x, axis=-1: torch.log_softmax(x, _axis(axis, x.dim())),
    "LeakyRelu": lambda ctx, x, alpha=0.01: F.leaky_relu(x, alpha),
    "HardSigmoid": lambda ctx, x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0, 1),
    "Gelu": lambda ctx, x, approximate="none": F.gelu(x, approximate=approximate),
    "Clip": _clip,
    "Flatten": lambda ctx, x, axis=1: x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1),
    "Reshape": _reshape, "Transpose": lambda ctx, x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Shape": lambda ctx, x, start=0, end=None: torch.tensor(list(x.shape)[start:end], dtype=torch.int64),
    "Slice": _slice, "Gather": _gather, "Split": _split,
    "Concat": lambda ctx, *xs, axis: torch.cat(xs, dim=axis),
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Cast": _cast, "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Range": lambda ctx, s, e, d: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype),
    "Trilu": lambda ctx, x, k=None, upper=1: (torch.triu if upper else torch.tril)(x, int(k.item()) if k is not None else 0),
    "Tile": lambda ctx, x, reps: x.repeat(*_ints(reps)),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax), "ReduceMin": _reduce(torch.amin),
}
COVERED_OPS = sorted(OPS) + ["Constant"]


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, copy=True))
    return t.to(dtype) if t.is_floating_point() else t


class OnnxModule(nn.Module):
    """An ONNX graph as a torch module computing in ``dtype``."""

    def __init__(self, model, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        for imp in model.opset_import:
            if imp.domain not in ("", "ai.onnx"):
                raise UnsupportedError(f"ONNX domain {imp.domain!r} is not covered by the PyTorch converter")
        missing = sorted({n.op_type for n in graph.node} - set(COVERED_OPS))
        if missing:
            raise UnsupportedError(f"the ONNX-to-PyTorch converter does not cover: {', '.join(missing)}")
        self.dtype = dtype
        self._names: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            self._add_const(init.name, numpy_helper.to_array(init), f"c{i}")
        self.nodes = []
        for j, node in enumerate(graph.node):
            attrs = _attr(node)
            if node.op_type == "Constant":
                value = attrs.get("value")
                if value is None:
                    for key in ("value_float", "value_floats", "value_int", "value_ints"):
                        if key in attrs:
                            value = np.asarray(attrs[key], np.float32 if "float" in key else np.int64)
                if value is None:
                    raise UnsupportedError("Constant without a numeric value is not covered")
                self._add_const(node.output[0], value, f"k{j}")
                continue
            if node.op_type == "Split":
                attrs["_n"] = len(node.output)
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.input_name = [i.name for i in graph.input if i.name not in self._names][0]
        self.output_name = graph.output[0].name

    def _add_const(self, name: str, array: np.ndarray, attr: str) -> None:
        self.register_buffer(attr, _tensor(array, self.dtype), persistent=False)
        self._names[name] = attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {name: getattr(self, attr) for name, attr in self._names.items()}
        env[self.input_name] = x.to(self.dtype) if x.is_floating_point() else x
        for op, ins, outs, attrs in self.nodes:
            args = [env[i] if i else None for i in ins]
            while args and args[-1] is None:
                args.pop()
            result = OPS[op](self, *args, **attrs)
            if isinstance(result, (list, tuple)):
                env.update(zip(outs, result))
            else:
                env[outs[0]] = result
        return env[self.output_name]


def convert(model, dtype: torch.dtype = torch.float32) -> OnnxModule:
    return OnnxModule(model, dtype).eval()
