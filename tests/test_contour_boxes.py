"""The fast all-thresholds contour boxes against a slow, obviously correct per-threshold OpenCV oracle."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.metrics.contour_boxes import HOLE_GROUPS, OUTER_GROUPS, multi_contour_hits, single_contour_hits
from pipeline.metrics.conventions import cam_thresholds, integer_thresholds, quantise

# 1 % IoU resolution: hits at every criterion pin the best IoU down to 1 %.
CRITERIA = np.arange(1, 101) / 100


def oracle_best_ious(scoremap, taus, gt, multi_contour):
    """Best IoU with any GT box at each tau, one cv2.findContours per threshold (the protocol's text)."""
    image = (scoremap * 255).astype(np.uint8)
    height, width = image.shape
    best = []
    for tau in taus:
        _, binary = cv2.threshold(image, int(tau * image.max()), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if not multi_contour and contours:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
        boxes = boxes or [(0, 0, 0, 0)]
        ious = []
        for bx0, by0, bx1, by1 in boxes:
            for gx0, gy0, gx1, gy1 in gt:
                inter = max(0, min(bx1, gx1) - max(bx0, gx0) + 1) * max(0, min(by1, gy1) - max(by0, gy0) + 1)
                union = (bx1 - bx0 + 1) * (by1 - by0 + 1) + (gx1 - gx0 + 1) * (gy1 - gy0 + 1) - inter
                ious.append(inter / union if union > 0 else 0.0)
        best.append(max(ious))
    return np.array(best)


@st.composite
def maps_and_boxes(draw):
    height = draw(st.integers(1, 24))
    width = draw(st.integers(1, 24))
    levels = draw(st.sampled_from([2, 3, 5, 256]))  # few levels: plateaus, holes and ties
    grid = draw(arrays(np.int64, (height, width), elements=st.integers(0, levels - 1)))
    scoremap = grid / (levels - 1)
    if draw(st.booleans()):
        scoremap = scoremap * draw(st.floats(0, 1))
    n_boxes = draw(st.integers(1, 3))
    boxes = []
    for _ in range(n_boxes):
        x0, x1 = sorted(draw(st.integers(0, width - 1)) for _ in range(2))
        y0, y1 = sorted(draw(st.integers(0, height - 1)) for _ in range(2))
        boxes.append((x0, y0, x1, y1))
    interval = draw(st.sampled_from([0.01, 0.05, 0.1, 0.25]))
    return scoremap, np.array(boxes, np.int64), interval


def fast_hits(scoremap, gt, taus, multi_contour):
    quantised = quantise(scoremap[None])
    cuts = integer_thresholds(taus, quantised)
    if multi_contour:
        return multi_contour_hits(quantised, cuts, gt, np.array([0]), np.array([len(gt)]), CRITERIA)[0]
    return single_contour_hits(quantised[0], cuts[0], gt, CRITERIA)


@settings(max_examples=300, deadline=None)
@given(maps_and_boxes())
def test_multi_contour_matches_per_threshold_opencv(case):
    scoremap, gt, interval = case
    taus = cam_thresholds(interval)
    expected = oracle_best_ious(scoremap, taus, gt, multi_contour=True)[:, None] >= CRITERIA[None, :]
    np.testing.assert_array_equal(fast_hits(scoremap, gt, taus, multi_contour=True), expected)


@settings(max_examples=150, deadline=None)
@given(maps_and_boxes())
def test_single_contour_matches_per_threshold_opencv(case):
    scoremap, gt, interval = case
    taus = cam_thresholds(interval)
    expected = oracle_best_ious(scoremap, taus, gt, multi_contour=False)[:, None] >= CRITERIA[None, :]
    np.testing.assert_array_equal(fast_hits(scoremap, gt, taus, multi_contour=False), expected)


def test_large_smooth_and_noisy_maps_match_opencv():
    rng = np.random.default_rng(7)
    taus = cam_thresholds(0.01)
    for sigma in (0.7, 2.0, 8.0):
        scoremap = cv2.GaussianBlur(rng.random((224, 224)), (0, 0), sigma)
        scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        gt = np.array([[20, 30, 120, 200], [100, 10, 220, 60]], np.int64)
        expected = oracle_best_ious(scoremap, taus, gt, multi_contour=True)[:, None] >= CRITERIA[None, :]
        np.testing.assert_array_equal(fast_hits(scoremap, gt, taus, multi_contour=True), expected)


def test_batch_result_is_per_map():
    """Maps of one batch with different GT boxes score independently of their neighbours."""
    rng = np.random.default_rng(3)
    maps = cv2.GaussianBlur(rng.random((40, 40)), (0, 0), 3)[None].repeat(3, axis=0)
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    maps[1] = maps[1][::-1]
    gt = np.array([[0, 0, 10, 10], [5, 5, 30, 30], [0, 0, 39, 39], [20, 0, 39, 15]], np.int64)
    taus = cam_thresholds(0.05)
    quantised = quantise(maps)
    cuts = integer_thresholds(taus, quantised)
    batch = multi_contour_hits(quantised, cuts, gt, np.array([0, 1, 3]), np.array([1, 3, 4]), CRITERIA)
    for b, rows in enumerate([slice(0, 1), slice(1, 3), slice(3, 4)]):
        alone = oracle_best_ious(maps[b], taus, gt[rows], multi_contour=True)[:, None] >= CRITERIA[None, :]
        np.testing.assert_array_equal(batch[b], alone)


def ring_mask(*names):
    order = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"]
    return sum(1 << order.index(name) for name in names)


@pytest.mark.parametrize("names, outer, holes", [
    ((), 0, 0),
    (("NE",), 1, 0),  # a lone diagonal is no 4-neighbour
    (("N", "E"), 1, 2),  # diagonal to each other: one group only with 8-connectivity
    (("N", "NE", "E"), 1, 1),  # NE links them in both
    (("N", "S"), 2, 2),
    (("N", "E", "S", "W"), 1, 4),
    (("NE", "SW"), 2, 0),
    (("N", "NE", "E", "SE", "S", "SW", "W", "NW"), 1, 1),
    (("N", "NE", "E", "S", "SW", "W"), 1, 2),  # gaps at SE and NW: bridged diagonally only with 8-connectivity
])
def test_neighbour_groups_around_a_pixel(names, outer, holes):
    assert OUTER_GROUPS[ring_mask(*names)] == outer
    assert HOLE_GROUPS[ring_mask(*names)] == holes
