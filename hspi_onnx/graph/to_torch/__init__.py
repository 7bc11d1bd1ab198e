"""Run an ONNX graph with PyTorch operators: the PyTorch adapter's path for models that are
not in the zoo (zoo models run from their own modules).

The graph is interpreted node by node in ``forward``, which takes every graph input (those
that are not initializers, in graph order: :attr:`OnnxModule.input_names`) and returns a
tuple with every graph output (in graph order: :attr:`OnnxModule.output_names`).

Float initializers, constants and casts to a float type take the module's compute dtype, so
``dtype=torch.float16`` runs the whole graph in half precision. A finite float constant
beyond that dtype's range (``torch.finfo(torch.float32).min`` in an attention mask) saturates
to the dtype's largest finite value, as ONNX float16 converters do, instead of becoming an
infinity. :data:`COVERED_OPS` lists the supported ops (default domain only; each registered by
its family module with the oldest op version it follows, ``registry.py``); a model using any
other op, in its graph or in a subgraph, or an older version of a covered one, is refused before
it runs, naming them; attribute values an op does not implement are refused with
:class:`UnsupportedError` too.
"""

from __future__ import annotations

from .module import OnnxModule, convert
from .ops import COVERED_OPS, OPS

__all__ = ["COVERED_OPS", "OPS", "OnnxModule", "convert"]
