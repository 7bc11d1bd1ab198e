"""Resampling: Resize, one axis at a time (the interpolation is separable).

For each resized axis, every output position maps to a source coordinate by the
``coordinate_transformation_mode``; its ``n`` nearest input positions (the lower one preferred on
a tie; positions past an edge repeat the edge) are weighted by the mode's kernel (nearest by
``nearest_mode``, linear, cubic with ``cubic_coeff_a``; with ``antialias`` the linear and cubic
kernels widen by 1/scale when downsampling) and summed. ``exclude_outside`` drops the weights of
positions past an edge and renormalizes; ``tf_crop_and_resize`` gives ``extrapolation_value``
where the source coordinate falls outside the input. Coordinates and weights are float64, the
sum in the module's dtype, and integer inputs are rounded back as the reference does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hspi_onnx.errors import UnsupportedError

from .common import _ints
from .registry import registrar

op, register = registrar(__name__)

_MODES = ("nearest", "linear", "cubic")
_COORDS = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _source(mode: str, y: np.ndarray, scale: float, n_in: int, n_out: int, roi) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinates of output positions ``y`` on one axis, and where they extrapolate."""
    width = scale * n_in  # the output extent before flooring
    if mode == "align_corners":
        return (np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "pytorch_half_pixel":
        return (np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        return offset + (y + 0.5) / scale - 0.5, None
    # tf_crop_and_resize
    lo, hi = roi
    if width == 1:
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2)
    else:
        x = y * (hi - lo) * (n_in - 1) / (width - 1)
    x = x + lo * (n_in - 1)
    return x, (x < 0) | (x > n_in - 1)


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances ``t``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _taps(kind: str, frac: np.ndarray, scale: float, antialias: bool, a: float, nearest: str) -> np.ndarray:
    """Weights (positions, taps) of the taps at offsets ``-(n/2 - 1) .. n/2`` from the lower
    neighbour, for fractional positions ``frac`` in (0, 1] (1 on an input position)."""
    if kind == "nearest":
        whole = frac == 1
        if nearest == "round_prefer_floor":
            up = frac > 0.5
        elif nearest == "round_prefer_ceil":
            up = frac >= 0.5
        else:
            up = np.full(frac.shape, nearest == "ceil")
        up = up | whole
        return np.stack([~up, up], axis=1).astype(np.float64)
    if not antialias or scale >= 1:
        if kind == "linear":
            return np.stack([1 - frac, frac], axis=1)
        return np.stack([_cubic(1 + frac, a), _cubic(frac, a), _cubic(1 - frac, a), _cubic(2 - frac, a)], axis=1)
    # antialias when downsampling: the kernel stretched by 1/scale, normalized
    reach = 1 if kind == "linear" else 2
    start = math.floor(-reach / scale) + 1
    offsets = np.arange(start, 2 - start)  # relative to the lower neighbour
    dist = (offsets[None, :] - frac[:, None]) * scale
    w = np.clip(1 - np.abs(dist), 0, 1) if kind == "linear" else _cubic(dist, a)
    return w / w.sum(axis=1, keepdims=True)


def _resize_axis(x: torch.Tensor, axis: int, scale: float, n_out: int, roi, p: dict) -> torch.Tensor:
    n_in = x.shape[axis]
    if n_out == 0:
        shape = list(x.shape)
        shape[axis] = 0
        return x.new_empty(shape)
    src, outside = _source(p["coord"], np.arange(n_out, dtype=np.float64), scale, n_in, n_out, roi)
    lower = np.floor(src)
    frac = src - lower
    on_input = frac == 0
    frac = np.where(on_input, 1.0, frac)  # prefer the input position on the left: ratio 1
    lower = np.where(on_input, lower - 1, lower).astype(np.int64)
    w = _taps(p["kind"], frac, scale, p["antialias"], p["a"], p["nearest"])
    n = w.shape[1]
    idx = lower[:, None] + np.arange(n)[None, :] - (n // 2 - 1)
    if p["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, n_in - 1)
    gathered = x.index_select(axis, torch.from_numpy(idx.reshape(-1)).to(x.device))
    shape = list(x.shape)
    shape[axis : axis + 1] = [n_out, n]
    gathered = gathered.reshape(shape)
    wshape = [1] * len(shape)
    wshape[axis], wshape[axis + 1] = n_out, n
    out = (gathered * torch.from_numpy(w).to(gathered.dtype).reshape(wshape)).sum(dim=axis + 1)
    if outside is not None and outside.any():
        mshape = [1] * out.dim()
        mshape[axis] = n_out
        mask = torch.from_numpy(outside).reshape(mshape).to(out.device)
        out = torch.where(mask, torch.full_like(out, p["extrapolation"]), out)
    return out


@op(
    "Resize",
    since=11,
    notes="nearest, linear and cubic on any axes, every coordinate mode and nearest mode, antialias, "
    "exclude_outside, keep_aspect_ratio_policy",
)
def _resize(
    ctx,
    x,
    roi=None,
    scales=None,
    sizes=None,
    antialias=0,
    axes=None,
    coordinate_transformation_mode="half_pixel",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    keep_aspect_ratio_policy="stretch",
    mode="nearest",
    nearest_mode="round_prefer_floor",
):
    if mode not in _MODES or coordinate_transformation_mode not in _COORDS or nearest_mode not in _NEAREST:
        raise UnsupportedError(
            f"Resize mode={mode}, coordinate_transformation_mode={coordinate_transformation_mode}, "
            f"nearest_mode={nearest_mode} is not covered"
        )
    if antialias and mode == "nearest":
        raise UnsupportedError("Resize with antialias needs mode linear or cubic (the spec)")
    r = x.dim()
    ax = list(axes) if axes is not None else list(range(r))
    ax = [a + r if a < 0 else a for a in ax]
    scale_list = [float(v) for v in scales.reshape(-1).tolist()] if scales is not None and scales.numel() else None
    size_list = _ints(sizes) if sizes is not None and sizes.numel() else None
    if (scale_list is None) == (size_list is None):
        raise UnsupportedError("Resize needs exactly one of scales and sizes")
    roi_list = [float(v) for v in roi.reshape(-1).tolist()] if roi is not None and roi.numel() else None
    full_scale = [1.0] * r
    full_size = list(x.shape)
    full_roi = [0.0] * r + [1.0] * r
    if roi_list is not None:
        for i, a in enumerate(ax if len(roi_list) == 2 * len(ax) else range(r)):
            full_roi[a], full_roi[a + r] = roi_list[i], roi_list[i + len(roi_list) // 2]
    if size_list is not None:
        for i, a in enumerate(ax):
            full_size[a] = size_list[i]
        full_scale = [full_size[i] / x.shape[i] for i in range(r)]
        if keep_aspect_ratio_policy != "stretch":
            pick = {"not_larger": min, "not_smaller": max}.get(keep_aspect_ratio_policy)
            if pick is None:
                raise UnsupportedError(f"Resize keep_aspect_ratio_policy={keep_aspect_ratio_policy} is not covered")
            s = pick(full_scale[a] for a in ax)
            full_scale = [s if i in ax else 1.0 for i in range(r)]
            full_size = [int(s * x.shape[i] + 0.5) if i in ax else x.shape[i] for i in range(r)]
    else:
        assert scale_list is not None
        for i, a in enumerate(ax):
            full_scale[a] = scale_list[i]
        full_size = [int(full_scale[i] * x.shape[i]) for i in range(r)]
    params = {
        "coord": coordinate_transformation_mode,
        "kind": mode,
        "antialias": bool(antialias),
        "a": float(cubic_coeff_a),
        "nearest": nearest_mode,
        "exclude_outside": bool(exclude_outside),
        "extrapolation": float(extrapolation_value),
    }
    integer = not x.is_floating_point()
    y = x.to(torch.float64) if integer else x
    for a in ax:
        untouched = math.isclose(full_scale[a], 1.0) and full_size[a] == y.shape[a]
        if untouched and math.isclose(full_roi[a], 0.0) and math.isclose(full_roi[a + r], 1.0):
            continue
        y = _resize_axis(y, a, full_scale[a], full_size[a], (full_roi[a], full_roi[a + r]), params)
    if integer:
        info = torch.iinfo(x.dtype)
        y = torch.round(y).clamp(info.min, info.max).to(x.dtype)
    return y


_GRID_MODES = {
    "bilinear": "bilinear",
    "linear": "bilinear",
    "nearest": "nearest",
    "bicubic": "bicubic",
    "cubic": "bicubic",
}


@op("GridSample", since=16, notes="2-D (every mode) and 3-D (linear, nearest) grids")
def _grid_sample(ctx, x, grid, align_corners=0, mode="bilinear", padding_mode="zeros"):
    how = _GRID_MODES.get(mode)
    if how is None or padding_mode not in ("zeros", "border", "reflection"):
        raise UnsupportedError(f"GridSample mode={mode}, padding_mode={padding_mode} is not covered")
    if x.dim() not in (4, 5) or (x.dim() == 5 and how == "bicubic"):
        raise UnsupportedError(f"GridSample {how} over {x.dim() - 2} spatial axes is not covered")
    return torch.nn.functional.grid_sample(
        x, grid.to(x.dtype), mode=how, padding_mode=padding_mode, align_corners=bool(align_corners)
    )


@op("AffineGrid", since=20)
def _affine_grid(ctx, theta, size, align_corners=0):
    return torch.nn.functional.affine_grid(theta, [int(v) for v in size.tolist()], align_corners=bool(align_corners))


@op("Col2Im", since=18, notes="two spatial axes")
def _col2im(ctx, x, image_shape, block_shape, dilations=None, pads=None, strides=None):
    image, block = [int(v) for v in image_shape.tolist()], [int(v) for v in block_shape.tolist()]
    if len(image) != 2:
        raise UnsupportedError(f"Col2Im over {len(image)} spatial axes is not covered")
    p = list(pads or [0, 0, 0, 0])
    if p[0] != p[2] or p[1] != p[3]:
        raise UnsupportedError("Col2Im with unequal begin and end pads is not covered")
    return _fold_eager(
        x, image, block, dilation=list(dilations or [1, 1]), padding=p[:2], stride=list(strides or [1, 1])
    )


# Kept out of torch.compile's graphs (a graph break: it runs eager in mode=compile too): torch
# 2.13's inductor miscomputes fold on CPU, e.g. a 5x5 image from (1, 5) blocks comes back with
# every other row zero (onnx's test_col2im; docs/adapters.md, compiled mode).
_fold_eager = torch.compiler.disable(torch.nn.functional.fold)
