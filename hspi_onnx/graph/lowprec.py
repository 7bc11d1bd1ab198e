"""ONNX graphs whose float tensors are half precision (fp16 or bf16), inputs and outputs kept
fp32: for runtimes that take precision from the graph itself (strongly typed TensorRT 11,
ONNX Runtime's fp16 platforms).

fp16 is ONNX Runtime's converter (``convert_float_to_float16``, ``keep_io_types``). bf16 is
derived from it, after the model is moved up to opset 22 (before it Conv and pooling do not
admit bfloat16): the same graph with every FLOAT16 type, cast target and constant turned into
BFLOAT16, constants rounded (to nearest even) from the original fp32 values rather than from
their fp16 copies, so a bf16 weight is never rounded twice. A graph that still names FLOAT16
anywhere after the rewrite (an op attribute this module does not know) is refused.
"""

from __future__ import annotations

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.graph.constants import float_constants_as_tensors

HALF_PRECISIONS = ("fp16", "bf16")
BF16_OPSET = 22  # the opset where Conv, pooling and the rest of the zoo's ops admit bfloat16


def _at_least_opset(model, opset: int):
    """``model`` converted up to ``opset`` of the default domain (unchanged if already there)."""
    from onnx import version_converter

    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if current >= opset:
        return model
    try:
        upgraded = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises plain errors for ops it cannot move
        raise UnsupportedError(
            f"cannot convert the model from opset {current} to {opset} for bf16: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        )
    upgraded.ir_version = max(upgraded.ir_version, 10)  # opset 22 is IR version 10
    return upgraded


def to_half(model, precision: str):
    """A copy of ``model`` (an onnx ModelProto) converted to ``precision`` (fp16 or bf16)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if precision not in HALF_PRECISIONS:
        raise UnsupportedError(f"no half-precision conversion to {precision!r}")
    model = _copy(_at_least_opset(model, BF16_OPSET) if precision == "bf16" else model)
    _refuse_unconvertible(model.graph)
    float_constants_as_tensors(model.graph)
    half = convert_float_to_float16(model, keep_io_types=True)
    if not any(o.domain in ("", "ai.onnx") for o in half.opset_import):  # its Casts need one
        half.opset_import.append(_default_opset_for(half.ir_version))
    for graph in _graphs(half.graph):
        _stash_outputs_in_float(graph)
    _sort_nodes(half.graph)  # the converter appends its input casts last; parsers read in order
    return half if precision == "fp16" else _fp16_to_bf16(half, _float_constants(model))


# ops ONNX Runtime's converter turns into graphs that do not type-check, with the reason
_UNCONVERTIBLE = {
    "MeanVarianceNormalization": "its function body adds a float32 epsilon (only float32 type-checks)",
    "FlexAttention": "the converter leaves its score_mod and prob_mod bodies in float32",
}


def _refuse_unconvertible(graph) -> None:
    for g in _graphs(graph):
        for node in g.node:
            why = _UNCONVERTIBLE.get(node.op_type)
            if why and (node.op_type != "FlexAttention" or any(a.name.endswith("_mod") for a in node.attribute)):
                raise UnsupportedError(f"half-precision conversion of {node.op_type}: {why}")


def _default_opset_for(ir_version: int):
    """The default-domain opset to import for the converter's Casts in a graph that imported
    none (an ai.onnx.ml-only model): the newest its IR version allows."""
    from onnx import helper

    newest = 1
    for ir, opset in ((3, 8), (4, 9), (5, 10), (6, 11), (7, 14), (8, 18), (9, 20), (10, 22)):
        if ir_version >= ir:
            newest = opset
    return helper.make_opsetid("", newest)


def _stash_outputs_in_float(graph) -> None:
    """LayerNormalization's Mean and InvStdDev are of its stash type (float32 unless
    ``stash_type`` says otherwise) whatever its input type; the converter types them half. Each
    is produced under a name of its own in the stash type, then cast to half as before."""
    from onnx import TensorProto, helper

    types = {v.name: v for v in graph.value_info}
    for node in list(graph.node):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        stash = next((a.i for a in node.attribute if a.name == "stash_type"), TensorProto.FLOAT)
        for k in range(1, len(node.output)):
            name = node.output[k]
            if not name:
                continue
            half = types[name].type.tensor_type.elem_type if name in types else TensorProto.FLOAT16
            node.output[k] = f"{name}_stash"
            graph.value_info.append(helper.make_tensor_value_info(node.output[k], stash, None))
            graph.node.append(helper.make_node("Cast", [node.output[k]], [name], to=half))


def _copy(model):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _sort_nodes(graph) -> None:
    """Order ``graph``'s nodes so each comes after the producers of its inputs, keeping the
    given order where it already holds (Kahn's algorithm over node positions)."""
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    waiting = [0] * len(nodes)
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for src in {producer[name] for name in _reads(n) if name in producer}:
            waiting[i] += 1
            consumers.setdefault(src, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in consumers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise UnsupportedError("the converted graph has a cycle")
    copies = [type(nodes[i])() for i in order]
    for c, i in zip(copies, order):
        c.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(copies)


def _reads(node) -> set[str]:
    """Names ``node`` reads: its inputs and whatever its subgraphs (If/Loop/Scan bodies) use."""
    names = set(node.input)
    for a in node.attribute:
        for g in ([a.g] if a.g.node else []) + list(a.graphs):
            for inner in g.node:
                names |= _reads(inner)
    return names


def _float_constants(model) -> dict:
    """The original fp32 constants by name: initializers and Constant nodes' values."""
    from onnx import TensorProto, numpy_helper

    out = {}
    for graph in _graphs(model.graph):
        for t in graph.initializer:
            if t.data_type == TensorProto.FLOAT:
                out[t.name] = numpy_helper.to_array(t)
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _graphs(graph):
    """``graph`` and every subgraph inside it (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.g.node:
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _bf16_tensor(values: np.ndarray, name: str, dims):
    import ml_dtypes
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=list(dims))
    t.raw_data = np.asarray(values, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16).astype("<u2").tobytes()
    return t


def _retype_tensor(t, original: np.ndarray | None) -> None:
    from onnx import TensorProto, numpy_helper

    if t.data_type != TensorProto.FLOAT16:
        return
    values = original if original is not None else numpy_helper.to_array(t).astype(np.float32)
    t.CopyFrom(_bf16_tensor(values.reshape(tuple(t.dims)), t.name, t.dims))


def _retype_value(v) -> None:
    from onnx import TensorProto

    tt = v.type.tensor_type
    if tt.elem_type == TensorProto.FLOAT16:
        tt.elem_type = TensorProto.BFLOAT16


def _fp16_to_bf16(model, originals: dict):
    from onnx import TensorProto

    for graph in _graphs(model.graph):
        for t in graph.initializer:
            _retype_tensor(t, originals.get(t.name))
        for v in [*graph.input, *graph.output, *graph.value_info]:
            _retype_value(v)
        for node in graph.node:
            for a in node.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT16:
                    a.i = TensorProto.BFLOAT16
                elif a.HasField("t"):
                    original = originals.get(node.output[0]) if node.op_type == "Constant" else None
                    _retype_tensor(a.t, original)
    left = typed_left(model, TensorProto.FLOAT16)
    if left:
        raise UnsupportedError(f"bf16 conversion left FLOAT16 in: {', '.join(left[:5])}")
    _admits_bfloat16(model)
    return model


def _admits_bfloat16(model) -> None:
    """Refuse a bf16 graph where an op's definition admits float16 but not bfloat16 (OneHot's
    indices, Shrink, Resize's roi at some opsets): onnx's type inference names the op."""
    import onnx

    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises its own error types here
        text = str(exc)
        if "tensor(bfloat16)" in text:
            op = text.split("(op_type:")[-1].split(")")[0] if "(op_type:" in text else "an op"
            raise UnsupportedError(f"bf16 conversion: {op} does not admit bfloat16 here") from None


def typed_left(model, elem_type: int) -> list[str]:
    """Where tensor type ``elem_type`` (an onnx.TensorProto type) is still named — an
    initializer, a graph input, output or value_info, a tensor attribute, a Cast target —
    in the graph or any subgraph (empty after a complete rewrite)."""
    from onnx import AttributeProto

    left = []
    for graph in _graphs(model.graph):
        left += [t.name for t in graph.initializer if t.data_type == elem_type]
        left += [
            v.name
            for v in [*graph.input, *graph.output, *graph.value_info]
            if v.type.tensor_type.elem_type == elem_type
        ]
        for node in graph.node:
            for a in node.attribute:
                if (a.type == AttributeProto.TENSOR and a.t.data_type == elem_type) or (
                    a.type == AttributeProto.INT and a.name in ("to", "dtype") and a.i == elem_type
                ):
                    left.append(f"{node.op_type} {node.name or node.output[0]}.{a.name}")
    return left
