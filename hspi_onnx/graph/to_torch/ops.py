"""The op table: ONNX op type (default domain) -> the function that runs it, and what the
interpreter covers, both read from the registry the operator family modules fill."""

from __future__ import annotations

# imported for their registrations
from . import attention, conv_pool, detection, elementwise, recurrent, sampling, shapes, spectral  # noqa: F401
from .registry import REGISTRY, registrar

_, _register = registrar("hspi_onnx.graph.to_torch.module")
# ops the interpreter runs itself (module.py)
_register("Constant", None, since=1, notes="folded into a buffer; sparse and string values are refused")
_register("If", None, since=1, notes="the branch the condition picks runs at each call")
_register("Scan", None, since=9, notes="the body runs once per slice, states carried, scan outputs stacked")
_register("Loop", None, since=1, notes="the body runs while the condition holds and the trip count lasts")

OPS = {name: entry.fn for name, entry in REGISTRY.items() if entry.fn is not None}
COVERED_OPS = sorted(REGISTRY)
_MULTI_OUTPUT = {name for name, entry in REGISTRY.items() if entry.count_outputs}
