"""Border probes (HSPI-BI): inputs near a decision boundary, where platforms whose outputs differ
in the low bits return different top-1 labels (:mod:`hspi_onnx.border.craft`)."""
