"""Bootstrap intervals on hand-built per-image records whose resampling distributions are worked out
by hand: a resample's image counts are multinomial (N; 1/N, ..., 1/N), so the number of resampled
images with some property, held by m of the N images, is binomial (N, m/N)."""

import numpy as np
import pytest

import pipeline.metrics.bootstrap as bootstrap_module
from pipeline.data.metadata import load_metadata
from pipeline.metrics import (
    BoxEvaluator,
    BoxRecords,
    MaskRecords,
    bootstrap_box,
    bootstrap_mask,
    confidence_intervals,
    mean_interval,
    paired_difference,
)
from tests.helpers import write_box_metadata

BOX_METRICS = {"maxboxacc_30", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "gt_known_loc", "top1_loc", "top1_cls"}


def box_records(hits, classified=None, deltas=(30, 50, 70), ids=None) -> BoxRecords:
    """hits: (N, D, K) bool."""
    hits = np.asarray(hits, bool)
    ids = [f"{i}.jpg" for i in range(len(hits))] if ids is None else ids
    return BoxRecords(image_ids=np.array(ids), thresholds=np.arange(hits.shape[2]) / hits.shape[2],
                      deltas=deltas, packed_hits=np.packbits(hits, axis=-1),
                      classified=None if classified is None else np.asarray(classified, bool))


def mask_records(foreground, background) -> MaskRecords:
    """Histograms (N, 102) over the bins of cam_curve_interval 0.01: [0, .01), ..., [.99, 1), [1, 2), [2, 3]."""
    foreground, background = np.asarray(foreground, np.int32), np.asarray(background, np.int32)
    edges = np.append(np.arange(100) / 100, [1.0, 2.0, 3.0])
    return MaskRecords(np.array([f"{i}" for i in range(len(foreground))]), edges, foreground, background)


@pytest.mark.parametrize("correct, expected", [(True, 100.0), (False, 0.0)])
def test_unanimous_images_collapse_every_interval(correct, expected):
    records = box_records(np.full((30, 3, 20), correct), classified=np.full(30, correct))
    intervals = bootstrap_box(records, samples=200)
    assert set(intervals) == BOX_METRICS
    assert all(interval == (expected, expected) for interval in intervals.values())


def test_one_hit_in_four_images_follows_the_binomial():
    # Resampled hits ~ Binomial(4, 1/4): P(<= 0, 1, 2, 3) = 81, 189, 243, 255 (/ 256) = .32, .74, .95, .996.
    # The 2.5 % quantile lies in the 0 hits block, the 97.5 % one in the 3 hits block (75 %); the 20 %
    # and 80 % quantiles in the 0 and 2 hits blocks.
    records = box_records([[[True]], [[False]], [[False]], [[False]]], deltas=(50,))
    assert bootstrap_box(records, (50,), samples=20000)["maxboxacc_50"] == (0.0, 75.0)
    assert bootstrap_box(records, (50,), samples=20000, level=0.6)["maxboxacc_50"] == (0.0, 50.0)


def test_each_resample_takes_its_own_max_over_tau():
    # Image 0 is hit only at tau_0, image 1 only at tau_1. A resample of both images once scores 50 at
    # either tau; one of either image twice scores 100 at its tau. So MaxBoxAcc is 50 or 100, each with
    # probability 1/2, never 0 (as it would be with tau held at the full sample's optimum).
    records = box_records([[[True, False]], [[False, True]]], deltas=(50,))
    intervals = bootstrap_box(records, (50,), samples=1000)
    assert intervals["maxboxacc_50"] == (50.0, 100.0)
    assert intervals["gt_known_loc"] == (50.0, 100.0)


def test_top1_loc_rechooses_the_gt_known_threshold():
    # Hits as above, image 0 classified wrong, image 1 right; the full sample's tau* is tau_0 (BoxAcc
    # ties at 50, the first wins). Resampled (2, 0) or (1, 1): tau* = tau_0, where only image 0 is hit:
    # top-1 loc 0; (0, 2): tau* = tau_1, top-1 loc 100, with probability 1/4. Holding tau* at tau_0
    # would give 0 in every resample.
    records = box_records([[[True, False]], [[False, True]]], classified=[False, True], deltas=(50,))
    assert bootstrap_box(records, (50,), samples=1000)["top1_loc"] == (0.0, 100.0)
    assert bootstrap_box(records, (50,), samples=1000, level=0.4)["top1_loc"] == (0.0, 0.0)


def test_half_of_400_images_has_the_normal_width():
    # p = 0.5, N = 400: the interval is about 50 +- 1.96 * sqrt(0.25 / 400) * 100 = 50 +- 4.9.
    hits = np.zeros((400, 3, 10), bool)
    hits[::2] = True
    intervals = bootstrap_box(box_records(hits, classified=np.arange(400) % 2 == 1), samples=4000)
    for name in ("maxboxacc_50", "gt_known_loc", "top1_cls"):
        low, high = intervals[name]
        assert low < 50 < high and high - low == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 400) * 100, abs=0.75)
    assert intervals["top1_loc"] == (0.0, 0.0)  # classified images are never hit


def test_the_intervals_are_reproducible_and_independent_of_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    records = box_records(rng.random((50, 3, 12)) < 0.5, classified=rng.random(50) < 0.5)
    whole = bootstrap_box(records, samples=300, seed=7)
    assert bootstrap_box(records, samples=300, seed=7) == whole
    assert bootstrap_box(records, samples=300, seed=8) != whole
    monkeypatch.setattr(bootstrap_module, "CHUNK_BYTES", 1)  # one resample per chunk
    assert bootstrap_box(records, samples=300, seed=7) == whole


def test_pxap_of_resampled_histograms():
    # Image 0: 100 foreground pixels at 0.9, 300 background at 0.1: PxAP 100. Image 1: the reverse
    # scores: precision is 0 until the foreground's bin, where recall reaches 1 at precision 100/400:
    # PxAP 25. A histogram's scale leaves PxAP unchanged, so resamples (2, 0), (1, 1), (0, 2) score
    # 100, some value between, 25.
    foreground, background = np.zeros((2, 102)), np.zeros((2, 102))
    foreground[0, 90], background[0, 10] = 100, 300
    foreground[1, 10], background[1, 90] = 100, 300
    assert bootstrap_mask(mask_records(foreground, background), samples=1000) == {"pxap": (25.0, 100.0)}
    assert bootstrap_mask(mask_records(foreground[:1], background[:1]), samples=10) == {"pxap": (100.0, 100.0)}


def test_paired_difference_of_a_run_with_itself_is_zero():
    rng = np.random.default_rng(0)
    records = box_records(rng.random((40, 3, 10)) < 0.5, classified=rng.random(40) < 0.7)
    for metric in BOX_METRICS:
        assert paired_difference(records, records, metric, samples=200) == (0.0, 0.0, 0.0)
    masks = mask_records(rng.integers(0, 50, (5, 102)), rng.integers(0, 50, (5, 102)))
    assert paired_difference(masks, masks, "pxap", samples=200) == (0.0, 0.0, 0.0)


def test_paired_difference_of_a_superset_of_hits_is_never_negative():
    # Run a hits every (image, delta, tau) b hits and some more, so each resample's BoxAcc curves, their
    # maxima and BoxAcc at delta 50's optimum are at least b's; the unpaired intervals overlap.
    rng = np.random.default_rng(1)
    b = rng.random((200, 3, 10)) < 0.4
    a = b | (rng.random((200, 3, 10)) < 0.05)
    records_a, records_b = box_records(a), box_records(b)
    for metric in ("maxboxacc_30", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "gt_known_loc"):
        difference, low, high = paired_difference(records_a, records_b, metric, samples=500)
        assert 0 < difference and 0 <= low <= difference <= high
        assert bootstrap_box(records_a, samples=500)[metric][0] < bootstrap_box(records_b, samples=500)[metric][1]


def test_point_estimates_are_the_evaluator_results(tmp_path):
    # The difference against a run that misses everything is the run's own point estimate.
    rng = np.random.default_rng(0)
    images = {f"{i}.jpg": (i % 3, (300 + i, 200 + 2 * i), [(10 + i, 20, 150 + i, 180)]) for i in range(12)}
    evaluator = BoxEvaluator(load_metadata(write_box_metadata(tmp_path / "meta", images)))
    evaluator.accumulate(np.stack([rng.random((224, 224)) ** 4 for _ in images]), list(images), [0] * 12)
    result = evaluator.compute()
    records = result.records
    nothing = BoxRecords(records.image_ids, records.thresholds, records.deltas, np.zeros_like(records.packed_hits),
                         np.zeros_like(records.classified))
    expected = {"maxboxacc_v2": result.maxboxacc_v2, "gt_known_loc": result.multi_contour.gt_known_loc,
                "top1_loc": result.multi_contour.top1_loc, "top1_cls": result.top1_cls,
                **{f"maxboxacc_{d}": v for d, v in result.multi_contour.maxboxacc.items()}}
    assert 0 < result.maxboxacc_v2 < 100
    for metric, value in expected.items():
        assert paired_difference(records, nothing, metric, samples=10)[0] == value
    intervals = confidence_intervals(result, samples=500)
    assert set(intervals) == BOX_METRICS
    assert all(low <= expected[m] <= high for m, (low, high) in intervals.items())


def test_records_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    for classified in (rng.random(7) < 0.5, None):
        records = box_records(rng.random((7, 3, 13)) < 0.5, classified, ids=[f"d/{i}.jpg" for i in range(7)])
        path = tmp_path / "run.records"  # saved at exactly this path
        records.save(path)
        loaded = BoxRecords.load(path)
        assert loaded.image_ids.tolist() == records.image_ids.tolist() and loaded.deltas == (30, 50, 70)
        np.testing.assert_array_equal(loaded.thresholds, records.thresholds)
        np.testing.assert_array_equal(loaded.hits(), records.hits())
        assert (loaded.classified is None) == (classified is None)
        if classified is not None:
            np.testing.assert_array_equal(loaded.classified, classified)
    masks = mask_records(rng.integers(0, 50, (4, 102)), rng.integers(0, 50, (4, 102)))
    masks.save(tmp_path / "masks.npz")
    loaded = MaskRecords.load(tmp_path / "masks.npz")
    for name in ("image_ids", "edges", "foreground", "background"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(masks, name))


def test_paired_records_must_hold_the_same_images():
    hits = np.ones((3, 3, 4), bool)
    records = box_records(hits, ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="row 1 is 'b' in the first, 'c' in the second"):
        paired_difference(records, box_records(hits, ids=["a", "c", "b"]), "maxboxacc_v2")
    with pytest.raises(ValueError, match="3 against 2"):
        paired_difference(records, box_records(hits[:2], ids=["a", "b"]), "maxboxacc_v2")
    with pytest.raises(ValueError, match="one kind"):
        paired_difference(records, mask_records(np.ones((3, 102)), np.ones((3, 102))), "pxap")
    with pytest.raises(ValueError, match="'top1_loc' is not one of the records' metrics"):
        paired_difference(records, records, "top1_loc")


def test_bad_arguments_are_named():
    records = box_records(np.ones((3, 3, 4), bool))
    with pytest.raises(ValueError, match="whole number >= 1, got 0"):
        bootstrap_box(records, samples=0)
    with pytest.raises(ValueError, match=r"iou_thresholds \[30, 90\] must be among the records' deltas"):
        bootstrap_box(records, (30, 90))
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\)"):
        bootstrap_box(records, samples=10, level=95)
    with pytest.raises(ValueError, match="packed hits have shape"):
        BoxRecords(records.image_ids[:2], records.thresholds, records.deltas, records.packed_hits, None)


def test_the_mean_over_seeds_is_resampled_on_shared_images():
    always, never = np.ones((4, 3, 2), bool), np.zeros((4, 3, 2), bool)
    half = never.copy()
    half[:2] = True
    runs = [box_records(always), box_records(never)]  # two seeds, as different as can be
    assert mean_interval(runs, "maxboxacc_v2") == (50.0, 50.0, 50.0)  # same images resampled: no spread
    estimate, low, high = mean_interval([box_records(half)], "maxboxacc_v2")
    assert estimate == 50.0 and low < 50 < high
    assert paired_difference(runs, [box_records(half)] * 2, "maxboxacc_v2")[0] == 0.0
