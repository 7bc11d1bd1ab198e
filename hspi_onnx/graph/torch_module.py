"""A model as a torch module computing in one dtype: the zoo's own module (with its saved
weights) or any ONNX graph through the converter (:mod:`hspi_onnx.graph.to_torch`)."""

from __future__ import annotations

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
