"""Detection heads: NonMaxSuppression (greedy, per batch and class, on the host)."""

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
