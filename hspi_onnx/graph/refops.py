"""ONNX's reference evaluator with corrected operator implementations.

``onnx.reference``'s GatherElements (``onnx/reference/ops/op_gather_elements.py``, onnx 1.23)
gathers with ``np.choose(indices, data)`` along the gathered axis; ``np.choose`` takes at most
63 choices under numpy 2 (32 under numpy 1), so for an axis longer than that it falls back to
``gather_numpy_2``, which keeps only the FIRST index of each row and reshapes that to the
indices' shape. Sentence-embedding encoders hit it: transformers' BertEmbeddings, called
without ``token_type_ids`` (as sentence-transformers exports are), gathers its
``token_type_ids`` buffer of shape (1, 512) with ``position_ids`` of shape (1, seq):

    ValueError: cannot reshape array of size 1 into shape (1,16)

at any batch size, in float32 and in the float64 widening alike (the data gathered is int64).
Where the fallback's shapes happen to agree (one index per row) it returns a value without an
error, and ``mode="wrap"`` silently wraps out-of-range indices. :class:`GatherElements` here
implements the operator per the spec instead; :func:`reference_evaluator` is the evaluator
with it.
"""

from __future__ import annotations

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun


def gather_elements(data: np.ndarray, indices: np.ndarray, axis: int = 0) -> np.ndarray:
    """ONNX GatherElements: ``out[i][j][k] = data[indices[i][j][k]][j][k]`` for axis 0 (and
    likewise for any axis); indices have data's rank, may be negative (counted from the end)
    and, on the other axes, may be shorter than data; the output has the indices' shape."""
    data, indices = np.asarray(data), np.asarray(indices)
    rank = data.ndim
    if indices.ndim != rank:
        raise ValueError(f"GatherElements: indices of rank {indices.ndim} for data of rank {rank}")
    if not -rank <= axis < rank:
        raise ValueError(f"GatherElements: axis {axis} out of range for rank {rank}")
    axis %= rank
    for d, (n, m) in enumerate(zip(indices.shape, data.shape)):
        if d != axis and n > m:
            raise ValueError(f"GatherElements: indices dim {d} is {n}, data's is only {m}")
    s = data.shape[axis]
    idx = indices.astype(np.int64)
    if idx.size and (idx.min() < -s or idx.max() >= s):
        raise IndexError(f"GatherElements: an index is out of [-{s}, {s - 1}] on axis {axis}")
    idx = np.where(idx < 0, idx + s, idx)
    grid = list(np.ogrid[tuple(slice(0, n) for n in indices.shape)]) if indices.ndim else []
    grid[axis] = idx
    return data[tuple(grid)]


class GatherElements(OpRun):
    op_domain = ""

    def _run(self, data, indices, axis=None):
        axis = self.axis if axis is None else axis
        return (gather_elements(data, indices, int(axis or 0)),)


NEW_OPS = [GatherElements]


def reference_evaluator(proto, **kwargs) -> ReferenceEvaluator:
    """``onnx.reference.ReferenceEvaluator(proto)`` with the corrected operators above."""
    new_ops = list(kwargs.pop("new_ops", None) or [])
    mine = {(c.op_domain, c.__name__) for c in new_ops}
    new_ops += [c for c in NEW_OPS if (c.op_domain, c.__name__) not in mine]
    return ReferenceEvaluator(proto, new_ops=new_ops, **kwargs)
