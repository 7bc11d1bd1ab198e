"""The float64 reference: the model's ONNX graph widened to float64 and computed by ONNX's
reference evaluator — the graph every ONNX platform runs, If/Loop/Scan bodies included — or,
for graphs it cannot widen (operators of custom domains) or evaluate, the model in PyTorch at
float64 (zoo module or converter)."""

from __future__ import annotations

import numpy as np

from hspi_onnx.errors import HspiError, UnsupportedError

SOURCE = "onnxref-fp64"
BATCH = 64


def to_float64(proto):
    """A copy of the ModelProto computing in float64 wherever it computed in float32, the
    bodies of If/Loop/Scan included."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    _widen(m.graph)
    return m


def _widen(graph) -> None:
    """Widen ``graph`` in place: float initializers, input/output/intermediate types, Cast
    targets, constant-valued attributes, and every subgraph (If branches, Loop/Scan bodies)."""
    import onnx
    from onnx import TensorProto

    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(_double(init))
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"fp64 conversion does not cover operators of domain {node.domain!r}")
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_double(attr.t))
            elif attr.type == onnx.AttributeProto.GRAPH:
                _widen(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _widen(sub)


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
