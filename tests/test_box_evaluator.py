"""Box metrics on hand-drawn 224x224 maps whose boxes and accuracies are worked out by hand.

Conventions used below: a component spanning pixels x0..x1, y0..y1 has the box (x0, y0, x1+1, y1+1)
(x1, y1 clipped to 223); a hole spanning x0..x1, y0..y1 has (x0-1, y0-1, x1+2, y1+2); IoU counts
pixels inclusively: area(x0, y0, x1, y1) = (x1-x0+1)(y1-y0+1).
"""

import numpy as np
import pytest

from pipeline.data.metadata import load_metadata
from pipeline.metrics import BoxEvaluator, ScoremapError
from pipeline.metrics.box_evaluator import _hit_counts, _pack
from pipeline.metrics.contour_boxes import multi_contour_hits
from pipeline.metrics.conventions import cam_thresholds, check_scoremaps, integer_thresholds, quantise
from tests.helpers import write_box_metadata

SIZE = (224, 224)


def evaluate(tmp_path, images, maps, predictions=None, interval=0.01, single_contour=False):
    metadata = load_metadata(write_box_metadata(tmp_path / "meta", images))
    evaluator = BoxEvaluator(metadata, interval, (30, 50, 70), single_contour=single_contour)
    evaluator.accumulate(np.stack(maps), list(images), predictions)
    return evaluator.compute()


def rectangle(x0, y0, x1, y1, value=1.0, scoremap=None):
    scoremap = np.zeros((224, 224)) if scoremap is None else scoremap
    scoremap[y0:y1 + 1, x0:x1 + 1] = value
    return scoremap


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantisation_truncates_like_the_reference(dtype):
    """uint8 values by (s * 255).astype(uint8) in float64, at and beside every k / 255."""
    steps = np.arange(256) / 255.0
    values = np.clip(np.concatenate([steps, np.nextafter(steps, -1), np.nextafter(steps, 2)]), 0, 1).astype(dtype)
    expected = (values.astype(np.float64) * 255).astype(np.uint8)
    assert quantise(values.reshape(3, 16, 16)).reshape(-1).tolist() == expected.tolist()
    assert quantise(np.array([[0.0, 0.5, 1.0]], dtype)).tolist() == [[0, 127, 255]]


def test_single_rectangle(tmp_path):
    # Pixels x 40..139, y 50..99 -> box (40, 50, 140, 100), area 101*51 = 5151; GT (40, 50, 139, 99),
    # area 100*50 = 5000, inside the box: IoU = 5000/5151 = 0.9707 at every tau. The second image's GT
    # lies elsewhere (IoU 0). So BoxAcc = 50 % at every tau and delta.
    images = {"a.jpg": (0, SIZE, [(40, 50, 139, 99)]), "b.jpg": (0, SIZE, [(150, 150, 200, 200)])}
    result = evaluate(tmp_path, images, [rectangle(40, 50, 139, 99), rectangle(40, 50, 139, 99)])
    assert result.multi_contour.maxboxacc == {30: 50.0, 50: 50.0, 70: 50.0}
    assert result.maxboxacc_v2 == 50.0
    for curve in result.multi_contour.boxacc.values():
        np.testing.assert_array_equal(curve, np.full(100, 50.0))
    assert result.multi_contour.optimal_threshold == {30: 0.0, 50: 0.0, 70: 0.0}


def test_two_blobs_multi_contour_finds_the_better_box(tmp_path):
    # A large blob (x 0..99, y 0..99) away from the GT and a small blob (x 150..179, y 150..179) on it.
    # Single contour takes the largest: IoU with GT (150, 150, 179, 179) is 0. Multi-contour: the small
    # blob's box (150, 150, 180, 180) has IoU 900/961 = 0.936.
    scoremap = rectangle(150, 150, 179, 179, scoremap=rectangle(0, 0, 99, 99))
    images = {"a.jpg": (0, SIZE, [(150, 150, 179, 179)])}
    result = evaluate(tmp_path, images, [scoremap], single_contour=True)
    assert result.multi_contour.maxboxacc == {30: 100.0, 50: 100.0, 70: 100.0}
    assert result.single_contour.maxboxacc == {30: 0.0, 50: 0.0, 70: 0.0}


def test_ring_hole_contour_gives_a_box(tmp_path):
    # A ring: on at x, y in 40..180, off at 80..140. Outer box (40, 40, 181, 181); the hole (80..140)
    # has the box (79, 79, 142, 142). GT (79, 79, 141, 141): IoU with the hole box 63^2/64^2 = 0.969,
    # with the outer box 63^2/142^2 = 0.197. Only the hole contour localises it.
    ring = rectangle(80, 80, 140, 140, 0.0, rectangle(40, 40, 180, 180))
    images = {"a.jpg": (0, SIZE, [(79, 79, 141, 141)])}
    result = evaluate(tmp_path, images, [ring], single_contour=True)
    assert result.multi_contour.maxboxacc == {30: 100.0, 50: 100.0, 70: 100.0}
    assert result.single_contour.maxboxacc == {30: 0.0, 50: 0.0, 70: 0.0}


def test_plateau_exactly_at_a_threshold_is_off(tmp_path):
    # An outer square (x, y 20..199) at uint8 value 127 around an inner square (x, y 100..119) at 255.
    # The cut at tau is int(tau * 255): 124 at tau = 0.49, 127 at tau = 0.50. A pixel is on only when
    # strictly above the cut, so the plateau is on up to tau = 0.49 and off from tau = 0.50.
    # GT = the outer square: IoU 180^2/181^2 = 0.989 while on; the inner box (100, 100, 120, 120)
    # has IoU 441/32400 = 0.014 after.
    value = 127.5 / 255  # (value * 255).astype(uint8) = 127
    scoremap = rectangle(100, 100, 119, 119, 1.0, rectangle(20, 20, 199, 199, value))
    assert (scoremap * 255).astype(np.uint8)[20, 20] == 127
    images = {"a.jpg": (0, SIZE, [(20, 20, 199, 199)])}
    result = evaluate(tmp_path, images, [scoremap])
    expected = np.array([100.0] * 50 + [0.0] * 50)
    for delta in (30, 50, 70):
        np.testing.assert_array_equal(result.multi_contour.boxacc[delta], expected)


def test_constant_maps(tmp_path):
    # All zeros: the uint8 maximum is 0, every cut is 0, no pixel is on, no contour: box (0, 0, 0, 0).
    # All ones: one component covering the image, box (0, 0, 224 -> 223, 224 -> 223).
    images = {"zeros.jpg": (0, SIZE, [(0, 0, 0, 0)]), "ones.jpg": (0, SIZE, [(0, 0, 223, 223)]),
              "zeros-miss.jpg": (0, SIZE, [(0, 0, 1, 1)])}  # IoU((0,0,0,0), (0,0,1,1)) = 1/4 < 0.3
    result = evaluate(tmp_path, images, [np.zeros((224, 224)), np.ones((224, 224)), np.zeros((224, 224))])
    assert result.multi_contour.maxboxacc == pytest.approx({30: 200 / 3, 50: 200 / 3, 70: 200 / 3}, abs=0)


def test_multiple_gt_boxes_any_one_counts(tmp_path):
    images = {"a.jpg": (0, SIZE, [(0, 0, 50, 50), (100, 120, 149, 169)])}
    result = evaluate(tmp_path, images, [rectangle(100, 120, 148, 168)])  # box (100, 120, 149, 169): IoU 1
    assert result.multi_contour.maxboxacc == {30: 100.0, 50: 100.0, 70: 100.0}


def test_non_square_image_boxes_rescale_by_truncation(tmp_path):
    # Original 448 x 112: x scales by 224/448, y by 224/112. GT (3, 5, 201, 60) -> (int(1.5), int(10.0),
    # int(100.5), int(120.0)) = (1, 10, 100, 120). Pixels x 1..99, y 10..119 give exactly that box.
    images = {"wide.jpg": (0, (448, 112), [(3, 5, 201, 60)])}
    metadata = load_metadata(write_box_metadata(tmp_path / "meta", images))
    evaluator = BoxEvaluator(metadata)
    np.testing.assert_array_equal(evaluator._gt, [[1, 10, 100, 120]])
    result = evaluate(tmp_path, images, [rectangle(1, 10, 99, 119)])
    assert result.multi_contour.maxboxacc == {30: 100.0, 50: 100.0, 70: 100.0}
    # One pixel narrower on the left: box (2, 10, 100, 120) has IoU 99*111/(100*111) = 0.99 < 1.
    near = evaluate(tmp_path / "b", images, [rectangle(2, 10, 99, 119)])
    assert near.multi_contour.maxboxacc[70] == 100.0


def test_gt_known_top1_loc_and_cls(tmp_path):
    # Three images, all localised at every tau except c (GT elsewhere). Classes: a right, b wrong, c right.
    images = {"a.jpg": (1, SIZE, [(10, 10, 99, 99)]), "b.jpg": (2, SIZE, [(10, 10, 99, 99)]),
              "c.jpg": (3, SIZE, [(150, 150, 200, 200)])}
    blob = rectangle(10, 10, 98, 98)
    result = evaluate(tmp_path, images, [blob, blob, blob], predictions=[1, 0, 3])
    assert result.multi_contour.gt_known_loc == pytest.approx(200 / 3, abs=0)
    assert result.multi_contour.top1_loc == pytest.approx(100 / 3, abs=0)
    assert result.top1_cls == pytest.approx(200 / 3, abs=0)


def test_optimal_threshold_is_the_first_maximum(tmp_path):
    # A two-level map: a broad square at 0.5 with a core at 1.0. GT = the core: localised only once the
    # broad square is off, i.e. from the first tau whose cut reaches uint8 127 (tau = 0.50).
    scoremap = rectangle(90, 90, 129, 129, 1.0, rectangle(0, 0, 223, 223, 0.5))
    images = {"a.jpg": (0, SIZE, [(90, 90, 130, 130)])}
    result = evaluate(tmp_path, images, [scoremap])
    assert result.multi_contour.optimal_threshold[70] == pytest.approx(0.5)
    assert result.multi_contour.maxboxacc[70] == 100.0


def test_results_do_not_depend_on_batching(tmp_path):
    rng = np.random.default_rng(0)
    images = {f"{i}.jpg": (i % 3, (300 + i, 200 + 2 * i), [(10 + i, 20, 150 + i, 180)]) for i in range(10)}
    maps = [rng.random((224, 224)) ** 4 for _ in images]
    metadata = load_metadata(write_box_metadata(tmp_path / "meta", images))
    whole = BoxEvaluator(metadata, single_contour=True)
    whole.accumulate(np.stack(maps), list(images), [0] * 10)
    pieces = BoxEvaluator(metadata, single_contour=True)
    ids = list(images)
    for i in (0, 3, 4, 9):
        stop = {0: 3, 3: 4, 4: 9, 9: 10}[i]
        pieces.accumulate(np.stack(maps[i:stop]), ids[i:stop], [0] * (stop - i))
    assert whole.compute().to_dict() == pieces.compute().to_dict()


def test_bad_scoremaps_name_the_image(tmp_path):
    images = {"a.jpg": (0, SIZE, [(0, 0, 10, 10)]), "b.jpg": (0, SIZE, [(0, 0, 10, 10)])}
    metadata = load_metadata(write_box_metadata(tmp_path / "meta", images))
    good = np.zeros((224, 224))
    nan = good.copy()
    nan[3, 4] = np.nan
    cases = {
        "contains NaN": np.stack([good, nan]),
        "values must lie in \\[0, 1\\]": np.stack([good, good + 1.5]),
        "shape": np.zeros((2, 224, 200)),
    }
    for message, maps in cases.items():
        with pytest.raises(ScoremapError, match=message):
            BoxEvaluator(metadata).accumulate(maps, ["a.jpg", "b.jpg"])
    with pytest.raises(ScoremapError, match="'b.jpg'"):
        BoxEvaluator(metadata).accumulate(np.stack([good, nan]), ["a.jpg", "b.jpg"])
    evaluator = BoxEvaluator(metadata)
    evaluator.accumulate(good[None], ["a.jpg"])
    with pytest.raises(ScoremapError, match="'a.jpg' was accumulated twice"):
        evaluator.accumulate(good[None], ["a.jpg"])
    with pytest.raises(ScoremapError, match="'z.jpg' is not in the metadata"):
        evaluator.accumulate(good[None], ["z.jpg"])
    with pytest.raises(ScoremapError, match="1 image\\(s\\) .* have no score map: 'b.jpg'"):
        evaluator.compute()


def test_records_keep_each_image_hits_and_class_flag(tmp_path):
    # As in test_gt_known_top1_loc_and_cls, accumulated out of order: records follow the metadata.
    images = {"a.jpg": (1, SIZE, [(10, 10, 99, 99)]), "b.jpg": (2, SIZE, [(10, 10, 99, 99)]),
              "c.jpg": (3, SIZE, [(150, 150, 200, 200)])}
    blob = rectangle(10, 10, 98, 98)
    evaluator = BoxEvaluator(load_metadata(write_box_metadata(tmp_path / "meta", images)))
    evaluator.accumulate(blob[None], ["c.jpg"], [3])
    evaluator.accumulate(np.stack([blob, blob]), ["a.jpg", "b.jpg"], [1, 0])
    records = evaluator.compute().records
    assert records.image_ids.tolist() == ["a.jpg", "b.jpg", "c.jpg"] and records.deltas == (30, 50, 70)
    assert records.packed_hits.shape == (3, 3, 13)  # 100 thresholds in 13 bytes
    hits = records.hits()
    assert hits.shape == (3, 3, 100) and hits[:2].all() and not hits[2].any()
    assert records.classified.tolist() == [True, False, True]
    assert evaluate(tmp_path / "no-classes", images, [blob] * 3).records.classified is None


def test_criteria_in_any_order_score_each_as_alone():
    # The sweeps take the criteria ascending; the answer keeps the order given.
    rng = np.random.default_rng(5)
    quantised = quantise(rng.random((3, 40, 48)) ** 3)
    cuts = integer_thresholds(cam_thresholds(0.05), quantised)
    gt = np.array([[5, 5, 30, 30], [0, 10, 47, 39], [10, 0, 20, 39]], np.int64)
    start, stop = np.arange(3), np.arange(1, 4)
    criteria = np.array([0.5, 0.1, 0.7, 0.3, 0.1])
    hits = multi_contour_hits(quantised, cuts, gt, start, stop, criteria)
    for d, criterion in enumerate(criteria):
        alone = multi_contour_hits(quantised, cuts, gt, start, stop, np.array([criterion]))
        np.testing.assert_array_equal(hits[..., d], alone[..., 0])


def test_hit_counts_over_chunks_equal_the_unpacked_sums():
    rng = np.random.default_rng(1)
    hits = rng.random((11, 100, 3)) < 0.4  # (N, K, D), as multi_contour_hits gives them
    rows = rng.random(11) < 0.5
    packed = _pack(hits)
    np.testing.assert_array_equal(_hit_counts(packed, 100, chunk=4), hits.sum(axis=0).T)
    np.testing.assert_array_equal(_hit_counts(packed, 100, rows, chunk=4), hits[rows].sum(axis=0).T)


def test_check_scoremaps_returns_the_quantised_maps(tmp_path):
    rng = np.random.default_rng(2)
    maps = rng.random((2, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(check_scoremaps(maps, ["a", "b"]), quantise(maps))
    images = {"a.jpg": (0, SIZE, [(0, 0, 10, 10)])}
    evaluator = BoxEvaluator(load_metadata(write_box_metadata(tmp_path / "meta", images)))
    with pytest.raises(ValueError, match="expected 1 quantised \\(224, 224\\) uint8 maps, got float32"):
        evaluator.accumulate_quantised(maps[:1], ["a.jpg"])
