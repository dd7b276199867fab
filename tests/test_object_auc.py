"""The attention diagnostic's object AUC on hand-drawn maps with known boxes."""

import numpy as np
import pytest

from pipeline.metrics.object_auc import cells_in_boxes, object_auc


def test_cell_centres_inside_a_box():
    # a 100 x 50 image under a 2 x 4 grid: centres at x = 12.5, 37.5, 62.5, 87.5 and y = 12.5, 37.5
    inside = cells_in_boxes([(30, 0, 70, 20)], (100, 50), (2, 4))
    assert inside.tolist() == [[False, True, True, False], [False, False, False, False]]
    union = cells_in_boxes([(0, 0, 12.5, 12.5), (80, 30, 100, 50)], (100, 50), (2, 4))  # edges inclusive
    assert union.tolist() == [[True, False, False, False], [False, False, False, True]]


def test_auc_of_maps_that_follow_ignore_or_invert_the_object():
    inside = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    assert object_auc(np.array([[5, 4, 1], [2, 3, 0]]), inside) == 1.0  # every object cell above every other
    assert object_auc(np.array([[0, 1, 5], [4, 3, 2]]), inside) == 0.0
    assert object_auc(np.full((2, 3), 7.0), inside) == 0.5  # flat: ties count half


def test_auc_by_hand_with_ties():
    # object scores 3, 1; background 2, 1, 0. Pairs (in, out): 3 beats all 3; 1 beats 0, ties 1, loses to 2
    inside = np.array([True, True, False, False, False])
    scores = np.array([3.0, 1.0, 2.0, 1.0, 0.0])
    assert object_auc(scores, inside) == pytest.approx((3 + 1 + 0.5) / 6)


def test_no_auc_without_both_sides():
    assert object_auc(np.arange(4.0), np.ones(4, dtype=bool)) is None
    assert object_auc(np.arange(4.0), np.zeros(4, dtype=bool)) is None
