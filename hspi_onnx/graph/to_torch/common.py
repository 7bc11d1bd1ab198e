"""What every operator family shares: ONNX element types, attributes, axes."""

from __future__ import annotations

import torch

_ONNX_INT = {
    2: torch.uint8,
    3: torch.int8,
    4: torch.uint16,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    12: torch.uint32,
    13: torch.uint64,
}
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


def _saturate(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float tensor in ``dtype``; finite values beyond its range become its largest finite value."""
    if dtype in (torch.float16, torch.bfloat16) and t.is_floating_point():
        big = torch.finfo(dtype).max
        t = torch.where(torch.isfinite(t), t.clamp(-big, big), t)
    return t.to(dtype)
