"""rewards.boxes: IoU, near-duplicate regions, one-to-one matching and set F1 (shared by the rewards and
the evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.boxes import (
    best_match_iou,
    components,
    count_distinct,
    eval_set_f1,
    hungarian_iou,
    iou,
    iou_matrix,
    matched_count,
    matched_iou_sum,
    precision_iou,
    regions,
    set_f1,
    soft_f1,
)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),  # half overlap: 50 / 150
        ([0, 0, 10, 10], [0, 0, 5, 5], 0.25),  # contained
        ([5, 5, 5, 10], [0, 0, 10, 10], 0.0),  # zero width
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # inverted box has no area
        ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),  # two points: union 0
    ],
)
def test_iou_edge_cases(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)
    assert iou_matrix([a], [b])[0, 0] == iou(a, b)


coord = st.integers(-20, 220) | st.floats(-20, 220, allow_nan=False)
box = st.tuples(coord, coord, coord, coord)


@settings(max_examples=200, deadline=None)
@given(st.lists(box, max_size=5), st.lists(box, max_size=5))
def test_iou_matrix_is_iou_entry_by_entry(pred, gt):
    m = iou_matrix(pred, gt)
    assert m.shape == (len(pred), len(gt))  # rows: predicted boxes, columns: ground truth
    assert m.tolist() == [[iou(p, g) for g in gt] for p in pred]  # exactly, not approximately


def test_matching_with_one_box_over_two_findings():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    big = [[0, 0, 30, 30]]  # IoU 100 / 900 with each finding
    assert best_match_iou(big, gt) == pytest.approx(100 / 900)  # the big box counts for both
    assert hungarian_iou(big, gt) == pytest.approx(100 / 900 / 2)  # one-to-one: for one only
    assert precision_iou(big, gt) == pytest.approx(100 / 900)
    assert matched_iou_sum(big, gt) == pytest.approx(100 / 900)
    exact = [[20, 20, 30, 30], [0, 0, 10, 10]]
    assert hungarian_iou(exact, gt) == best_match_iou(exact, gt) == 1.0
    assert matched_count(exact + exact, gt) == 2  # duplicates match one box each
    assert matched_count([[0, 0, 10, 26]], gt, threshold=0.5) == 0  # IoU 100 / 260


def test_matching_without_boxes():
    gt = [[0, 0, 10, 10]]
    assert best_match_iou([], gt) == hungarian_iou([], gt) == 0.0
    assert best_match_iou(gt, []) is None and hungarian_iou(gt, []) is None
    assert precision_iou([], gt) is None and precision_iou(gt, []) is None
    assert matched_count([], gt) == 0 and matched_iou_sum([], gt) == 0.0 and soft_f1(gt, []) == 0.0


@settings(max_examples=150, deadline=None)
@given(st.lists(box, min_size=1, max_size=5), st.lists(box, min_size=1, max_size=5))
def test_reward_and_evaluation_match_the_same_pairs(pred, gt):
    """The grounding reward's matched sum and the evaluation's Hungarian IoU are one matching."""
    assert hungarian_iou(pred, gt) == pytest.approx(matched_iou_sum(pred, gt) / len(gt))
    assert hungarian_iou(pred, gt) <= best_match_iou(pred, gt) + 1e-12


def test_set_f1_variants_differ_only_when_both_sets_are_empty():
    # Reward: an answer without labels pays nothing, even for an empty ground truth.
    assert set_f1(set(), set()) == 0.0
    # Evaluation: nothing predicted for nothing to find is correct.
    assert eval_set_f1(set(), set()) == 1.0
    for pred, gt, f1 in (
        ({"a"}, set(), 0.0),
        (set(), {"a"}, 0.0),
        ({"a", "b"}, {"b", "c"}, 0.5),
        ({"a"}, {"a"}, 1.0),
    ):
        assert set_f1(pred, gt) == eval_set_f1(pred, gt) == f1


def test_components_are_transitive_and_numbered_in_order():
    # 0-1 and 1-3 linked: one component, though 0 and 3 are not linked directly
    links = {(0, 1), (1, 3)}
    assert components(5, lambda i, j: (i, j) in links) == [0, 0, 1, 0, 2]
    assert components(3, lambda i, j: False) == [0, 1, 2]
    assert components(0, lambda i, j: True) == []


def test_regions_merge_near_duplicates_transitively():
    a = [0, 0, 100, 100]
    b = [0, 0, 100, 105]  # IoU with a: 100 / 105 > 0.9
    c = [0, 0, 100, 114]  # IoU with b > 0.9, with a < 0.9: same region through b
    far = [200, 200, 300, 300]
    assert iou(a, c) < 0.9 < min(iou(a, b), iou(b, c))
    assert regions([a, far, c, b]) == [0, 1, 0, 0]
    assert count_distinct([a, far, c, b]) == 2
    assert count_distinct([a, c]) == 2 and count_distinct([a]) == 1 and count_distinct([]) == 0


def test_iou_matrix_of_nothing():
    assert iou_matrix([], [[0, 0, 1, 1]]).shape == (0, 1)
    assert np.array_equal(iou_matrix([[0, 0, 1, 1]], []), np.zeros((1, 0)))
