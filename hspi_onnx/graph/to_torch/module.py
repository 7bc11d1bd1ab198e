"""The interpreter: an ONNX graph as a torch module, run node by node."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import torch
from torch import nn

from hspi_onnx.errors import UnsupportedError

from .common import _attr, _saturate
from .ops import _MULTI_OUTPUT, COVERED_OPS, OPS
from .registry import REGISTRY


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    array = np.array(array, copy=True)
    if array.dtype == np.float16 or array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    elif array.dtype in (np.uint16, np.uint32):  # held as int64 (PyTorch has no arithmetic for them)
        array = array.astype(np.int64)
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


def _too_old(ops: set[str], opset: int) -> list[str]:
    """The covered ops whose version in ``opset`` is older than the one their implementation
    follows (the registry's ``since``), as "Pad-2 (covered from Pad-11)"."""
    from onnx import defs

    out = []
    for name in sorted(ops):
        entry = REGISTRY.get(name)
        if entry is None or entry.since <= 1:
            continue
        try:
            version = defs.get_schema(name, opset, "").since_version
        except defs.SchemaError:  # no such op in this opset: an invalid model, onnx.checker's business
            continue
        if version < entry.since:
            out.append(f"{name}-{version} (covered from {name}-{entry.since})")
    return out


class _Graph:
    """A compiled (sub)graph: its nodes and the names of its outputs."""

    def __init__(self, nodes: list, outputs: list[str], inputs: list[str] | None = None) -> None:
        self.nodes, self.outputs, self.inputs = nodes, outputs, inputs or []


@functools.cache
def _parameters(op_type: str) -> frozenset[str] | None:
    """The attribute names an op's implementation takes (None: any, it has ``**kwargs``)."""
    params = inspect.signature(OPS[op_type]).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def _check_attributes(op_type: str, attrs: dict) -> None:
    """Refuse, before running, an attribute the op's implementation does not read (a newer
    version's, or a misspelt one) instead of failing inside it."""
    if op_type not in OPS:
        return
    known = _parameters(op_type)
    unknown = sorted(set(attrs) - known) if known is not None else []
    if unknown:
        raise UnsupportedError(f"{op_type}'s attribute {unknown[0]!r} is not covered by the PyTorch converter")


def _wide_unsigned(graph) -> str | None:
    """UINT64 if the graph's inputs, outputs or initializers hold it: int64 cannot stand for it
    (UINT16 and UINT32 are held as int64, wrapped, see :func:`_unsigned_widths`)."""
    from onnx import TensorProto

    types = [
        v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output) if v.type.HasField("tensor_type")
    ]
    types += [t.data_type for t in graph.initializer]
    return "UINT64" if TensorProto.UINT64 in types else None


_UNSIGNED = {4: 16, 12: 32}
PREVIEW_DOMAIN = "ai.onnx.preview"
PREVIEW_OPS = {"FlexAttention"}  # the preview domain's ops the converter follows  # ONNX UINT16, UINT32 -> bits


def _unsigned_widths(model) -> dict[str, int]:
    """Value name -> 16 or 32 for every UINT16/UINT32 value (inputs, outputs, intermediates, by
    onnx's type inference): such values are held as int64 and wrapped to their width after each
    node, so that arithmetic is modular as the spec wants. Refused when inference fails on a
    graph that holds them."""
    import onnx

    def widths(values) -> dict[str, int]:
        return {
            v.name: _UNSIGNED[v.type.tensor_type.elem_type]
            for v in values
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in _UNSIGNED
        }

    g = model.graph
    out = widths(list(g.input) + list(g.output))
    out.update({t.name: _UNSIGNED[t.data_type] for t in g.initializer if t.data_type in _UNSIGNED})
    if not out and not _makes_unsigned(g):
        return out  # no inference for the graphs (almost all) that never hold such a value
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a help here, not a requirement
        if out:
            raise UnsupportedError("UINT16/UINT32 tensors need onnx's type inference, which failed on this model")
        return out

    def walk(graph) -> None:
        out.update(widths(list(graph.value_info) + list(graph.output)))
        for node in graph.node:
            for a in node.attribute:
                if a.type == a.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(inferred.graph)
    return out


def _makes_unsigned(graph) -> bool:
    """Whether a node of ``graph`` (or a subgraph) can produce a UINT16/UINT32 value: a type
    attribute (Cast's ``to``, EyeLike's ``dtype``, ...) or a constant tensor of that type, or a
    declared intermediate."""
    if any(v.type.tensor_type.elem_type in _UNSIGNED for v in graph.value_info if v.type.HasField("tensor_type")):
        return True
    for node in graph.node:
        for a in node.attribute:
            if a.type == a.INT and a.name in ("to", "dtype", "output_dtype") and a.i in _UNSIGNED:
                return True
            if a.type == a.TENSOR and a.t.data_type in _UNSIGNED:
                return True
            if (a.type == a.GRAPH and _makes_unsigned(a.g)) or any(_makes_unsigned(sub) for sub in a.graphs):
                return True
    return False


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
            if imp.domain == PREVIEW_DOMAIN:
                continue  # its ops are checked one by one (PREVIEW_OPS)
            if imp.domain not in ("", "ai.onnx"):
                raise UnsupportedError(f"ONNX domain {imp.domain!r} is not covered by the PyTorch converter")
            self.opset = int(imp.version)
        wide_unsigned = _wide_unsigned(graph)
        if wide_unsigned:
            raise UnsupportedError(
                f"{wide_unsigned} tensors are not covered by the PyTorch converter (int64 cannot hold them)"
            )
        self._wrap = _unsigned_widths(model)
        ops = _ops_of(graph)
        missing = sorted(ops - set(COVERED_OPS))
        if missing:
            raise UnsupportedError(f"the ONNX-to-PyTorch converter does not cover: {', '.join(missing)}")
        too_old = _too_old(ops, self.opset)
        if too_old:
            raise UnsupportedError(
                f"the ONNX-to-PyTorch converter does not cover these op versions (opset {self.opset}): "
                + ", ".join(too_old)
            )
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
            if node.domain not in ("", "ai.onnx") and not (
                node.domain == PREVIEW_DOMAIN and node.op_type in PREVIEW_OPS
            ):
                raise UnsupportedError(
                    f"ONNX domain {node.domain!r} ({node.op_type}) is not covered by the PyTorch converter"
                )
            attrs = _attr(node)
            _check_attributes(node.op_type, attrs)
            if node.op_type == "Constant":
                self._add_const(node.output[0], self._constant(attrs))
                continue
            if node.op_type == "If":
                attrs = {
                    "then_branch": self._compile(attrs["then_branch"]),
                    "else_branch": self._compile(attrs["else_branch"]),
                }
            elif node.op_type in ("Scan", "Loop"):
                attrs = {**attrs, "body": self._compile(attrs["body"])}
            elif node.op_type == "FlexAttention":
                attrs = {k: self._compile(v) if k in ("score_mod", "prob_mod") else v for k, v in attrs.items()}
            elif node.op_type in _MULTI_OUTPUT:
                attrs["_n"] = len(node.output)
            nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        return _Graph(nodes, [o.name for o in graph.output], [i.name for i in graph.input])

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
                assert args[0] is not None  # its condition is a required input
                branch = attrs["then_branch"] if bool(args[0].reshape(-1)[0]) else attrs["else_branch"]
                result = self._run(branch, dict(env))
            elif op == "FlexAttention":
                mods = {k: self._graph_fn(v, env) for k, v in attrs.items() if isinstance(v, _Graph)}
                result = OPS[op](self, *args, **{**attrs, **mods})
            elif op == "Scan":
                result = self._scan(env, args, **attrs)
            elif op == "Loop":
                result = self._loop(env, [env[i] if i else None for i in ins], **attrs)
            else:
                result = OPS[op](self, *args, **attrs)
            if isinstance(result, (list, tuple)):
                env.update((n, v) for n, v in zip(outs, result) if n)
            else:
                env[outs[0]] = result
            if self._wrap:
                for n in outs:
                    if n in self._wrap and n in env:
                        env[n] = self._wrapped(env[n], self._wrap[n])
        return [env[o] for o in graph.outputs]

    def _graph_fn(self, graph: _Graph, env: dict):
        """A one-input, one-output subgraph as a function (FlexAttention's score_mod, prob_mod)."""
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise UnsupportedError("a score_mod or prob_mod graph must take one input and give one output")

        def run(t: torch.Tensor) -> torch.Tensor:
            return self._run(graph, {**env, graph.inputs[0]: t})[0]

        return run

    def _scan(
        self,
        env: dict,
        args: list,
        body: _Graph,
        num_scan_inputs: int,
        scan_input_axes=None,
        scan_input_directions=None,
        scan_output_axes=None,
        scan_output_directions=None,
    ) -> list:
        """Scan-9 on: the body over slices of the scan inputs, carrying the states; the scan
        outputs stacked."""
        m = int(num_scan_inputs)
        states, scans = list(args[: len(args) - m]), list(args[len(args) - m :])
        in_axes = [a % s.dim() for a, s in zip(scan_input_axes or [0] * m, scans)]
        in_dirs = list(scan_input_directions or [0] * m)
        length = scans[0].shape[in_axes[0]]
        collected: list[list[torch.Tensor]] = []
        for t in range(length):
            inner = dict(env)
            slices = [s.select(a, length - 1 - t if d else t) for s, a, d in zip(scans, in_axes, in_dirs)]
            inner.update(zip(body.inputs, states + slices))
            out = self._run(body, inner)
            states, per_step = out[: len(states)], out[len(states) :]
            collected.append(per_step)
        k = len(body.outputs) - len(states)
        out_axes, out_dirs = list(scan_output_axes or [0] * k), list(scan_output_directions or [0] * k)
        stacked = []
        for j in range(k):
            steps = [c[j] for c in collected]
            if out_dirs[j]:
                steps = steps[::-1]
            axis = out_axes[j] % (steps[0].dim() + 1)
            stacked.append(torch.stack(steps, dim=axis))
        return states + stacked

    def _loop(self, env: dict, args: list, body: _Graph) -> list:
        """Loop-1 on: at most M trips while the condition holds, carrying the loop values; scan
        outputs stacked on a new first axis."""
        trips = int(args[0].reshape(-1)[0]) if args and args[0] is not None else None
        cond = bool(args[1].reshape(-1)[0]) if len(args) > 1 and args[1] is not None else True
        carried = list(args[2:])
        collected: list[list[torch.Tensor]] = []
        i = 0
        while cond and (trips is None or i < trips):
            inner = dict(env)
            values = [torch.tensor(i, dtype=torch.int64), torch.tensor(cond)] + carried
            inner.update(zip(body.inputs, values))
            out = self._run(body, inner)
            cond = bool(out[0].reshape(-1)[0])
            carried = out[1 : 1 + len(carried)]
            collected.append(out[1 + len(carried) :])
            i += 1
            if trips is None and i > 1 << 20:
                raise UnsupportedError("a Loop without a trip count ran over 2**20 iterations")
        k = len(body.outputs) - 1 - len(carried)
        if not collected:
            if k:
                raise UnsupportedError("a Loop that runs no iteration and has scan outputs is not covered")
            return carried
        return carried + [torch.stack([c[j] for c in collected]) for j in range(k)]

    @staticmethod
    def _wrapped(t: torch.Tensor, bits: int) -> torch.Tensor:
        """A UINT16/UINT32 value held as int64, reduced modulo 2**bits."""
        if t.is_floating_point() or t.dtype == torch.bool:
            return t
        return t.to(torch.int64) & ((1 << bits) - 1)

    def forward(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) > len(self.input_names):
            raise TypeError(
                f"the graph takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}"
            )
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
            if x.dtype in (torch.uint16, torch.uint32):  # held as int64 inside
                x = x.to(torch.int64)
            env[name] = x.to(self.dtype) if x.is_floating_point() else x
        outputs = self._run(self.graph, env)
        narrow = {16: torch.uint16, 32: torch.uint32}
        return tuple(
            y.to(narrow[self._wrap[name]]) if name in self._wrap and not y.is_floating_point() else y
            for name, y in zip(self.output_names, outputs)
        )


def convert(model, dtype: torch.dtype = torch.float32) -> OnnxModule:
    return OnnxModule(model, dtype).eval()
