"""Detection heads: NonMaxSuppression (greedy, per batch and class, on the host) and RoiAlign
(bilinear samples per region of interest, averaged or maxed)."""

from __future__ import annotations

import torch

from .registry import registrar

op, register = registrar(__name__)


def _corners(box: list[float], center: bool) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of a box given as [y1, x1, y2, x2] (corners in any order) or
    [x_center, y_center, width, height]."""
    if center:
        x, y, w, h = box
        return x - w / 2, x + w / 2, y - h / 2, y + h / 2
    y1, x1, y2, x2 = box
    return min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)


def _overlaps(a, b, threshold: float) -> bool:
    """Whether boxes ``a`` and ``b`` (corners) overlap by more than ``threshold`` (IoU)."""
    w = min(a[1], b[1]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[2], b[2])
    if w <= 0 or h <= 0:
        return False
    inter = w * h
    area_a = (a[1] - a[0]) * (a[3] - a[2])
    area_b = (b[1] - b[0]) * (b[3] - b[2])
    union = area_a + area_b - inter
    if area_a <= 0 or area_b <= 0 or union <= 0:
        return False
    return inter / union > threshold


@op("NonMaxSuppression", since=10)
def _nms(ctx, boxes, scores, max_output=None, iou_threshold=None, score_threshold=None, center_point_box=0):
    limit = max(int(max_output.reshape(-1)[0]), 0) if max_output is not None and max_output.numel() else 0
    iou = float(iou_threshold.reshape(-1)[0]) if iou_threshold is not None and iou_threshold.numel() else 0.0
    floor = float(score_threshold.reshape(-1)[0]) if score_threshold is not None and score_threshold.numel() else None
    all_boxes, all_scores = boxes.tolist(), scores.tolist()
    picked: list[list[int]] = []
    for b, (batch_boxes, batch_scores) in enumerate(zip(all_boxes, all_scores)):
        corners = [_corners(box, bool(center_point_box)) for box in batch_boxes]
        for c, class_scores in enumerate(batch_scores):
            order = [i for i in range(len(class_scores)) if floor is None or class_scores[i] > floor]
            order.sort(key=lambda i: (-class_scores[i], i))  # highest first, the lower index on a tie
            kept: list[int] = []
            for i in order:
                if len(kept) >= limit:
                    break
                if not any(_overlaps(corners[i], corners[j], iou) for j in kept):
                    kept.append(i)
                    picked.append([b, c, i])
    return torch.tensor(picked, dtype=torch.int64, device=boxes.device).reshape(-1, 3)


def _roi_axis(start: float, size: float, bins: int, grid: int, extent: int):
    """Along one axis of one RoI: each sample's (valid, low, high, low weight, high weight), the
    samples ``grid`` per bin, centred in their sub-bins, bilinear between the two nearest
    positions (a sample before -1 or past ``extent`` is invalid; one past the last position
    takes that position)."""
    import numpy as np

    k = np.arange(bins)[:, None] * (size / bins) + (np.arange(grid)[None, :] + 0.5) * (size / bins) / grid
    pos = (start + k).reshape(-1)
    valid = (pos >= -1.0) & (pos <= extent)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    edge = low >= extent - 1
    low = np.where(edge, extent - 1, low)
    high = np.where(edge, extent - 1, low + 1)
    pos = np.where(edge, low, pos)
    frac = pos - low
    return valid, low, high, 1.0 - frac, frac


@op(
    "RoiAlign",
    since=10,
    notes="avg and max (the spec's max: of the four weighted corners, then of the samples); each RoI on the host",
)
def _roi_align(
    ctx,
    x,
    rois,
    batch_indices,
    coordinate_transformation_mode=None,
    mode="avg",
    output_height=1,
    output_width=1,
    sampling_ratio=0,
    spatial_scale=1.0,
):
    import math

    import numpy as np

    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = coordinate_transformation_mode or ("half_pixel" if ctx.opset >= 16 else "output_half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    half = ctm == "half_pixel"
    _, channels, height, width = x.shape
    ph, pw = int(output_height), int(output_width)
    out = []
    for roi, b in zip(rois.double().tolist(), batch_indices.tolist()):
        x0, y0, x1, y1 = (v * spatial_scale - (0.5 if half else 0.0) for v in roi)
        rw, rh = x1 - x0, y1 - y0
        if not half:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rw / pw)
        if gh <= 0 or gw <= 0:
            out.append(x.new_zeros((channels, ph, pw)))
            continue
        vy, ylo, yhi, hy, ly = _roi_axis(y0, rh, ph, gh, height)
        vx, xlo, xhi, hx, lx = _roi_axis(x0, rw, pw, gw, width)
        valid = vy[:, None] & vx[None, :]
        weights = [np.where(valid, a[:, None] * c[None, :], 0.0) for a, c in ((hy, hx), (hy, lx), (ly, hx), (ly, lx))]
        corners = [(ylo, xlo), (ylo, xhi), (yhi, xlo), (yhi, xhi)]
        feature = x[int(b)]
        terms = [
            torch.from_numpy(w).to(x.dtype) * feature[:, torch.from_numpy(yi)[:, None], torch.from_numpy(xi)[None, :]]
            for w, (yi, xi) in zip(weights, corners)
        ]
        grid = torch.stack(terms).reshape(4, channels, ph, gh, pw, gw)
        if mode == "avg":
            out.append(grid.sum(dim=0).sum(dim=(2, 4)) / max(gh * gw, 1))
        else:
            out.append(grid.amax(dim=0).amax(dim=(2, 4)))
    return torch.stack(out) if out else x.new_zeros((0, channels, ph, pw))
