"""Graph rewrites: reduced-precision graphs, ONNX -> PyTorch, float64 widening."""
