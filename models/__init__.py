"""The model zoo: small models built deterministically from a seed, exported to ONNX.

Importing this package is cheap; torch is imported only when a model is built.
"""

from __future__ import annotations

from .export import build_module, ensure_exported, export_model
from .zoo import SMALL, ZOO, ZOO_VERSION, ZooEntry

__all__ = ["SMALL", "ZOO", "ZOO_VERSION", "ZooEntry", "build_module", "ensure_exported", "export_model"]
