"""Built-in runtime adapters, registered through the ``hspi_onnx.runtimes`` entry points."""
