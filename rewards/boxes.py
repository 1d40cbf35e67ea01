"""Box geometry for the grounded rewards: validity in the image frame, IoU, near-duplicates, matching.

A box is ``(x_min, y_min, x_max, y_max)`` in absolute pixels of the image as the model sees
it (the one coordinate frame of the project); ``width``/``height`` are that frame's size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MIN_BOX_SIDE = 4.0  # px: a box thinner than this in either direction is degenerate
DUPLICATE_IOU = 0.9  # two cited boxes with IoU above this are the same region
WHOLE_FRAME_COVER = 0.9  # a box covering more of the frame than this says nothing about a region

VALID, INVALID, WHOLE_FRAME = "valid", "invalid", "whole_frame"


def box_status(box, width: float, height: float) -> str:
    """``valid``, ``invalid`` or ``whole_frame`` for one cited box in a width x height frame.

    valid: ``0 <= x_min < x_max <= width``, ``0 <= y_min < y_max <= height`` and both sides
    at least ``MIN_BOX_SIDE`` px. whole_frame: valid but covering more than
    ``WHOLE_FRAME_COVER`` of the frame (neither paid nor penalised: it localises nothing).
    """
    x0, y0, x1, y1 = box
    if not (0 <= x0 and x0 + MIN_BOX_SIDE <= x1 <= width and 0 <= y0 and y0 + MIN_BOX_SIDE <= y1 <= height):
        return INVALID
    if (x1 - x0) * (y1 - y0) > WHOLE_FRAME_COVER * width * height:
        return WHOLE_FRAME
    return VALID


def iou(a, b) -> float:
    """Intersection over union; 0.0 for empty, inverted or non-overlapping boxes."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (ax1 - ax0) * (ay1 - ay0)
    area_b = (bx1 - bx0) * (by1 - by0)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    return inter / (area_a + area_b - inter)


def components(n: int, linked: Callable[[int, int], bool]) -> list[int]:
    """Connected-component id of each of ``n`` items under the symmetric relation ``linked(i, j)``
    (union-find with path halving; items in one component share an id)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if linked(i, j):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[ri] = rj
    return [find(i) for i in range(n)]


def regions(boxes) -> list[int]:
    """Region id of each box: connected components of the "IoU > DUPLICATE_IOU" graph.

    Components (not a greedy pass) make regions order-independent and monotone: adding a box
    that duplicates one already there never adds a region.
    """
    return components(len(boxes), lambda i, j: iou(boxes[i], boxes[j]) > DUPLICATE_IOU)


def count_distinct(boxes) -> int:
    """Number of distinct regions among ``boxes`` (near-duplicates count once)."""
    return len(set(regions(boxes))) if len(boxes) > 1 else len(boxes)


def count_paying_regions(boxes, statuses) -> int:
    """Regions whose every citation is ``valid``: a region also cited out of frame, inverted or as
    the whole frame pays nothing (so a near-copy of an invalid box cannot buy it back)."""
    if not boxes:
        return 0
    ok: dict[int, bool] = {}
    for region, status in zip(regions(boxes), statuses):
        ok[region] = ok.get(region, True) and status == VALID
    return sum(ok.values())


def iou_matrix(pred, gt) -> np.ndarray:
    """IoU of every predicted box (rows) with every ground-truth box (columns)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0])
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    union = area_p[:, None] + area_g[None, :] - inter
    ok = (inter > 0) & (area_p[:, None] > 0) & (area_g[None, :] > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def matched_iou_sum(pred, gt) -> float:
    """Sum of IoU over a one-to-one (Hungarian) matching of predicted to ground-truth boxes."""
    if not pred or not gt:
        return 0.0
    if len(pred) == 1 or len(gt) == 1:  # one-to-one with a single box on one side: the best pair
        if len(pred) == 1 and len(gt) == 1:
            return iou(pred[0], gt[0])
        return float(iou_matrix(pred, gt).max())
    from scipy.optimize import linear_sum_assignment

    m = iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum())


def soft_f1(pred, gt) -> float:
    """Soft F1 of box sets: P = S / n_pred, R = S / n_gt with S the matched IoU sum; F1 = 2S / (n_pred + n_gt).

    1.0 exactly when the predicted boxes are the ground-truth boxes; extra, duplicate or
    missing boxes lower it; each matched pair counts by its IoU.
    """
    if not pred or not gt:
        return 0.0
    s = matched_iou_sum(pred, gt)
    return min(1.0, 2.0 * s / (len(pred) + len(gt)))
