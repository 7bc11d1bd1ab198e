"""Constant nodes whose float value is an attribute of kind FLOAT or FLOATS (``value_float``,
``value_floats``) rewritten to the equivalent ``value`` tensor, so that a precision rewrite
that changes tensors (float16, bfloat16, float64) changes them too: left as they are, they stay
float32 beside widened or narrowed values and the graph no longer type-checks."""

from __future__ import annotations

import numpy as np


def float_constants_as_tensors(graph) -> None:
    """In place, ``graph`` and every subgraph (If branches, Loop and Scan bodies)."""
    import onnx
    from onnx import numpy_helper

    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                float_constants_as_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    float_constants_as_tensors(sub)
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for k, attr in enumerate(node.attribute):
            if attr.name in ("value_float", "value_floats"):
                value = np.float32(attr.f) if attr.name == "value_float" else np.asarray(attr.floats, np.float32)
                tensor = onnx.helper.make_attribute("value", numpy_helper.from_array(np.asarray(value)))
                del node.attribute[k]
                node.attribute.append(tensor)
                break
