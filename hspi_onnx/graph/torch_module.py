"""A model as a torch module computing in one dtype: the zoo's own module (with its saved
weights) or any ONNX graph through the converter (:mod:`hspi_onnx.graph.to_torch`)."""

from __future__ import annotations

import functools

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.inputs.model import WEIGHTS_META_KEY


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[precision]


def has_module(model) -> bool:
    from hspi_onnx.models import ZOO

    return model.zoo in ZOO and WEIGHTS_META_KEY in model.metadata and model.weights_path().is_file()


def build_torch_module(model, src: str, precision: str):
    """The model as a torch module computing in ``precision`` (``src`` = module or onnx)."""
    dtype = torch_dtype(precision)
    if src == "module":
        if not has_module(model):
            raise UnsupportedError(f"{model.name} has no zoo module and weights beside it; use src=onnx")
        from hspi_onnx.models.export import load_module

        return load_module(model.zoo, model.weights_path(), model.metadata[WEIGHTS_META_KEY]).to(dtype)
    from hspi_onnx.graph.to_torch import convert

    return convert(model.load(), dtype)


def to_numpy(t) -> np.ndarray:
    """A torch tensor as numpy in its own dtype (bfloat16 as ml_dtypes' bfloat16)."""
    import torch

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


@functools.lru_cache(maxsize=1)
def compile_unavailable() -> str:
    """Why torch.compile (inductor, CPU) cannot run here, or "" when it can: it needs a C++
    compiler, and the check compiles a two-layer module once."""
    import shutil

    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "inductor needs a C++ compiler (g++, c++ or clang++) on PATH"
    try:
        import torch

        probe = torch.compile(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()), backend="inductor")
        with torch.inference_mode():
            probe(torch.ones(2, 4))
    except Exception as exc:  # inductor raises many kinds of errors when the toolchain is broken
        return f"torch.compile failed on a probe module: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return ""


class InductorModule:
    """``module`` under torch.compile with inductor (static shapes, graph breaks allowed),
    called like the module. Dynamo's caches are reset first: they are keyed by code object, and
    every converted ONNX graph shares the interpreter's ``forward``, so after 8 models dynamo
    would silently run the next one eager under a label that says compiled. The first call
    raises :class:`UnsupportedError` when dynamo handed inductor no graph at all (the model ran
    eager); :attr:`graphs` counts the graphs inductor compiled on that call."""

    def __init__(self, module) -> None:
        import torch

        torch._dynamo.reset()
        self.graphs = 0
        self._compiled = torch.compile(module, backend="inductor", dynamic=False, fullgraph=False)
        self._checked = False

    def __call__(self, *args):
        if self._checked:
            return self._compiled(*args)
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        out = self._compiled(*args)
        self.graphs = counters["stats"]["unique_graphs"] - before
        if self.graphs == 0:
            raise UnsupportedError("torch.compile handed inductor no graph of this model (dynamo ran it eager)")
        self._checked = True
        return out
