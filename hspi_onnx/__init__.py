"""hspi-onnx: hardware and software platform inference for ONNX models."""

__version__ = "0.1.0"
