"""Models (zoo or any ONNX file), safe ONNX reading, probe sets."""
