"""Box geometry and set F1, for the rewards and the evaluation: validity in the image frame, IoU,
near-duplicates, one-to-one matching, and the F1 of label sets and (soft) of box sets.

A box is ``(x_min, y_min, x_max, y_max)`` in absolute pixels of the image as the model sees
it (the one coordinate frame of the project); ``width``/``height`` are that frame's size.

Argument order, everywhere: predicted boxes first, ground truth second (``iou_matrix(pred, gt)``
has a row per predicted box and a column per ground-truth box).

scipy is imported inside the functions that need it: it costs 0.2-0.4 s, and ``import rewards``
stays light for every command line that only reads answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


# ---------------------------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------------------------


def iou(a, b) -> float:
    """Intersection over union; 0.0 for empty, inverted or non-overlapping boxes. Symmetric."""
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


def iou_matrix(pred, gt) -> np.ndarray:
    """IoU of every predicted box (rows) with every ground-truth box (columns); equal to ``iou`` entry
    by entry (same float64 operations in the same order)."""
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


# ---------------------------------------------------------------------------------------------
# Near-duplicates: connected components
# ---------------------------------------------------------------------------------------------


def components(n: int, linked: Callable[[int, int], bool]) -> list[int]:
    """Connected-component id of each of ``n`` items under the symmetric relation ``linked(i, j)``:
    items in one component share an id; ids are 0, 1, ... in order of each component's first item."""
    adjacency = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            adjacency[i, j] = linked(i, j)
    if not adjacency.any():  # every item alone: the usual case of distinct boxes skips scipy's 0.1 ms set-up
        return list(range(n))
    from scipy.sparse.csgraph import connected_components

    return connected_components(adjacency, directed=False)[1].tolist()


def regions(boxes) -> list[int]:
    """Region id of each box: connected components of the "IoU > DUPLICATE_IOU" graph.

    Components (not a greedy pass) make regions order-independent and monotone: adding a box
    that duplicates one already there never adds a region. The pairs are compared with ``iou`` one
    by one: for the few boxes of one completion that is faster than ``iou_matrix``.
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


# ---------------------------------------------------------------------------------------------
# One-to-one matching of predicted to ground-truth boxes
# ---------------------------------------------------------------------------------------------


def max_matching(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a maximum-weight one-to-one matching (Hungarian, scipy), rows ascending."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(weights, maximize=True)


def matched_iou_sum(pred, gt) -> float:
    """Sum of IoU over a one-to-one (Hungarian) matching of predicted to ground-truth boxes."""
    if not pred or not gt:
        return 0.0
    if len(pred) == 1 or len(gt) == 1:  # one-to-one with a single box on one side: the best pair
        if len(pred) == 1 and len(gt) == 1:
            return iou(pred[0], gt[0])
        return float(iou_matrix(pred, gt).max())
    m = iou_matrix(pred, gt)
    rows, cols = max_matching(m)
    return float(m[rows, cols].sum())


def soft_f1(pred, gt) -> float:
    """Soft F1 of box sets: P = S / n_pred, R = S / n_gt with S the matched IoU sum; F1 = 2S / (n_pred + n_gt).

    1.0 exactly when the predicted boxes are the ground-truth boxes; extra, duplicate or
    missing boxes lower it; each matched pair counts by its IoU. 0.0 when either side is empty.
    """
    if not pred or not gt:
        return 0.0
    s = matched_iou_sum(pred, gt)
    return min(1.0, 2.0 * s / (len(pred) + len(gt)))


def best_match_iou(pred: Sequence, gt: Sequence) -> float | None:
    """Mean over ground-truth boxes of the best IoU with any predicted box (None without gt, 0.0
    without predictions): one predicted box may cover several ground-truth boxes."""
    if not gt:
        return None
    if not pred:
        return 0.0
    return float(iou_matrix(pred, gt).max(axis=0).mean())


def hungarian_iou(pred: Sequence, gt: Sequence) -> float | None:
    """One-to-one version of ``best_match_iou``: the matched IoU sum over the number of ground-truth
    boxes (unmatched ones count 0)."""
    if not gt:
        return None
    if not pred:
        return 0.0
    # Matched with ground-truth boxes as rows, so the matched IoUs are summed in ground-truth order:
    # a float sum depends on its order, and the published evaluation numbers were summed this way.
    m = iou_matrix(pred, gt).T
    rows, cols = max_matching(m)
    return float(m[rows, cols].sum() / len(gt))


def precision_iou(pred: Sequence, gt: Sequence) -> float | None:
    """Mean over predicted boxes of the best IoU with a ground-truth box (None if either is empty)."""
    if not gt or not pred:
        return None
    return float(iou_matrix(pred, gt).max(axis=1).mean())


def matched_count(pred: Sequence, gt: Sequence, threshold: float = 0.5) -> int:
    """True positives: the largest one-to-one matching of pairs with IoU >= threshold."""
    if not gt or not pred:
        return 0
    ok = (iou_matrix(pred, gt) >= threshold).astype(float)
    rows, cols = max_matching(ok)
    return int(ok[rows, cols].sum())


# ---------------------------------------------------------------------------------------------
# F1 of two sets: two variants on purpose
# ---------------------------------------------------------------------------------------------
# They differ only when both sets are empty. A reward pays nothing for an answer that names no label
# (one of only punctuation or articles): an empty answer must never be a safe bet for the policy. An
# evaluation metric counts an empty prediction for an empty ground truth as correct: there was
# nothing to find, and the published list F1 scores it so.


def set_f1(pred: set, gt: set) -> float:
    """F1 of two sets for a reward: 0.0 when they share nothing, both empty included."""
    common = len(pred & gt)
    if not common:
        return 0.0
    return 2 * common / (len(pred) + len(gt))


def eval_set_f1(pred: set, gt: set) -> float:
    """F1 of two sets for evaluation: 1.0 when both are empty, else as ``set_f1``."""
    if not pred and not gt:
        return 1.0
    return set_f1(pred, gt)
