"""The float64 reference: the model's ONNX graph widened to float64 and computed by ONNX's
reference evaluator — the graph every ONNX platform runs, If/Loop/Scan bodies included — or,
for graphs it cannot widen (operators of custom domains) or evaluate, the model in PyTorch at
float64 (zoo module or converter)."""

from __future__ import annotations

import numpy as np

from hspi_onnx.errors import HspiError, UnsupportedError
from hspi_onnx.graph.constants import float_constants_as_tensors

SOURCE = "onnxref-fp64"
BATCH = 64


def to_float64(proto):
    """A copy of the ModelProto computing in float64 wherever it computed in float32, the
    bodies of If/Loop/Scan included."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    opset = max((int(i.version) for i in m.opset_import if i.domain in ("", "ai.onnx")), default=0)
    float_constants_as_tensors(m.graph)
    _widen(m.graph, opset)
    return m


def _float_only_uses(graph, opset: int) -> tuple[set[str], list[str]]:
    """(values only read where an op's definition admits no double, e.g. Resize's scales; the
    ops that would read or write a widened value where they admit no double): by the type
    constraints of each node's schema at ``opset``."""
    from onnx import defs

    def float_not_double(schema, formal) -> bool:
        """Whether the formal parameter takes float but not double."""
        allowed = next(
            (set(c.allowed_type_strs) for c in schema.type_constraints if c.type_param_str == formal.type_str),
            {formal.type_str},
        )
        return "tensor(float)" in allowed and "tensor(double)" not in allowed

    float_only: dict[str, bool] = {}
    produced_float_only: list[str] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = defs.get_schema(node.op_type, opset, "")
        except Exception:  # noqa: BLE001 - an op onnx does not know: left to the checker
            continue
        formals = list(schema.inputs)
        for k, name in enumerate(node.input):
            if not name or not formals:
                continue
            formal = formals[min(k, len(formals) - 1)]  # a variadic last input repeats
            float_only[name] = float_only.get(name, True) and float_not_double(schema, formal)
        outs = list(schema.outputs)
        for k, name in enumerate(node.output):
            if name and outs and float_not_double(schema, outs[min(k, len(outs) - 1)]):
                produced_float_only.append(f"{node.op_type} output {name!r}")
    return {n for n, only in float_only.items() if only}, produced_float_only


def _widen(graph, opset: int = 0) -> None:
    """Widen ``graph`` in place: float initializers, input/output/intermediate types, Cast
    targets, constant-valued attributes, and every subgraph (If branches, Loop/Scan bodies).
    A value only read where the op admits no double (Resize's scales) stays float; a float value
    an op admitting no double would read or write otherwise is refused."""
    import onnx
    from onnx import TensorProto

    keep, float_only_ops = _float_only_uses(graph, opset) if opset else (set(), [])
    if float_only_ops:
        raise UnsupportedError(f"fp64 conversion: {float_only_ops[0]} admits no double")
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(_double(init))
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in keep:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"fp64 conversion does not cover operators of domain {node.domain!r}")
        why = _NO_FLOAT64.get(node.op_type)
        if why:
            raise UnsupportedError(f"fp64 conversion of {node.op_type}: {why}")
        if node.op_type == "Constant" and node.output[0] in keep:
            continue
        if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("value", _double_zero()))  # its default is float32 0
        for attr in node.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE  # Cast, CastLike's kin, EyeLike and the rest that name a type
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_double(attr.t))
            elif attr.type == onnx.AttributeProto.GRAPH:
                _widen(attr.g, opset)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _widen(sub, opset)


# ops whose float64 graph is no reference for the float32 one, with the reason
_RANDOM = "draws random numbers; a float64 graph draws others, so there is no reference to compute"
_NO_FLOAT64 = {
    "Bernoulli": _RANDOM,
    "Multinomial": _RANDOM,
    "RandomNormal": _RANDOM,
    "RandomNormalLike": _RANDOM,
    "RandomUniform": _RANDOM,
    "RandomUniformLike": _RANDOM,
    "MeanVarianceNormalization": "its function body adds a float32 epsilon (only float32 type-checks)",
}


def _double_zero():
    from onnx import numpy_helper

    return numpy_helper.from_array(np.zeros(1, np.float64), "value")


def _double(tensor):
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _in_batches(run, feeds: dict[str, np.ndarray], names: list[str], batch: int) -> dict[str, np.ndarray]:
    n = len(next(iter(feeds.values())))
    parts: dict[str, list] = {k: [] for k in names}
    for i in range(0, n, batch):
        out = run({k: v[i : i + batch] for k, v in feeds.items()})
        for k, v in zip(names, out):
            parts[k].append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def onnx_float64(model, feeds: dict[str, np.ndarray], batch: int = BATCH) -> dict[str, np.ndarray]:
    """Every output of the ONNX graph computed in float64 by the reference evaluator."""
    from hspi_onnx.graph.refops import reference_evaluator

    evaluator = reference_evaluator(to_float64(model.load()))
    wide = {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v for k, v in feeds.items()}
    try:
        return _in_batches(lambda f: evaluator.run(None, f), wide, model.output_names, batch)
    except HspiError:
        raise
    except Exception as exc:  # the evaluator raises plain errors for what it cannot compute
        raise UnsupportedError(f"the reference evaluator cannot compute {model.name} in float64: {exc}")


def torch_float64(model, feeds: dict[str, np.ndarray], batch: int = BATCH) -> dict[str, np.ndarray]:
    """Every output of the model computed in float64 in PyTorch (zoo module or converter)."""
    import torch

    from hspi_onnx.graph.torch_module import build_torch_module, has_module

    module = build_torch_module(model, "module" if has_module(model) else "onnx", "fp64")

    def run(f):
        args = []
        for name in model.input_names:
            t = torch.from_numpy(np.ascontiguousarray(f[name]))
            args.append(t.double() if t.is_floating_point() else t)
        with torch.inference_mode():
            out = module(*args)
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

    return _in_batches(run, feeds, model.output_names, batch)


def compute_float64(model, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """(every output in float64, what computed them)."""
    try:
        out, source = onnx_float64(model, feeds), SOURCE
    except UnsupportedError:
        out, source = torch_float64(model, feeds), "pytorch-fp64"
    return {k: v.astype(np.float64) for k, v in out.items()}, source
