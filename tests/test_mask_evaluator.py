"""PxAP on hand-built masks and maps, with the precision-recall sums worked out by hand."""

import cv2
import numpy as np
import pytest

from pipeline.data.metadata import load_metadata
from pipeline.metrics import MaskEvaluator, ScoremapError, confidence_intervals
from tests.helpers import write_box_metadata


def mask_split(tmp_path, masks: dict[str, tuple[list[np.ndarray], np.ndarray | None]]):
    """Writes PNG masks (any size; resized to 224 by nearest neighbour) and mask metadata."""
    write_box_metadata(tmp_path / "meta", {i: (0, (448, 448), [(0, 0, 1, 1)]) for i in masks})
    lines = []
    for image_id, (instances, ignore) in masks.items():
        for k, instance in enumerate(instances):
            cv2.imwrite(str(tmp_path / f"{image_id}_{k}.png"), instance.astype(np.uint8) * 255)
            ignore_name = ""
            if k == 0 and ignore is not None:
                ignore_name = f"{image_id}_ignore.png"
                cv2.imwrite(str(tmp_path / ignore_name), ignore.astype(np.uint8) * 255)
            lines.append(f"{image_id},{image_id}_{k}.png,{ignore_name}\n")
    (tmp_path / "meta" / "localization.txt").write_text("".join(lines))
    return load_metadata(tmp_path / "meta")


def rows(first, last, size=448):
    """A (size, size) mask on rows first..last (in 224-pixel units, doubled for the 448 PNG)."""
    mask = np.zeros((size, size), bool)
    mask[2 * first:2 * last + 2] = True
    return mask


def test_perfect_separation_with_scored_ignore_region(tmp_path):
    # Foreground rows 0..99 score 0.9, background 0.1, and the ignore region (rows 100..149) scores
    # 0.95. Ignored pixels count as neither, so precision stays 1 up to recall 1: PxAP = 100. Were
    # they counted as background, precision at full recall would be 22400/(22400+11200) < 1.
    metadata = mask_split(tmp_path, {"a": ([rows(0, 99)], rows(100, 149))})
    scoremap = np.full((224, 224), 0.1)
    scoremap[:100] = 0.9
    scoremap[100:150] = 0.95
    evaluator = MaskEvaluator(metadata, tmp_path)
    evaluator.accumulate(scoremap[None], ["a"])
    assert evaluator.compute().pxap == pytest.approx(100.0, abs=1e-9)


def test_partial_separation(tmp_path):
    # Foreground rows 0..99 (22400 px): rows 0..49 score 0.9, rows 50..99 score 0.2. Background:
    # rows 100..149 (11200 px) score 0.5, the rest 0. Going down the thresholds: recall 0.5 at
    # precision 1 (edge 0.9), then recall 1 at precision 22400/(22400+11200) = 2/3 (edge 0.2).
    # PxAP = 100 * (0.5 * 1 + 0.5 * 2/3) = 83.33...
    metadata = mask_split(tmp_path, {"a": ([rows(0, 99)], None)})
    scoremap = np.zeros((224, 224))
    scoremap[:50], scoremap[50:100], scoremap[100:150] = 0.9, 0.2, 0.5
    evaluator = MaskEvaluator(metadata, tmp_path)
    evaluator.accumulate(scoremap[None], ["a"])
    result = evaluator.compute()
    assert result.pxap == pytest.approx(100 * (0.5 + 0.5 * 2 / 3), abs=1e-9)
    assert confidence_intervals(result, samples=50) == {"pxap": [result.pxap, result.pxap]}  # one image: itself
    # The PR curve passes through (recall 0.5, precision 1) and ends at (recall 1, precision 22400/50176).
    points = set(zip(np.round(result.recall, 12), np.round(result.precision, 12), strict=False))
    assert (0.5, 1.0) in points
    assert result.recall[-1] == 1.0 and result.precision[-1] == pytest.approx(22400 / 50176)


def test_instance_masks_are_united(tmp_path):
    # Two instance masks (rows 0..49 and 50..99) together form the foreground of the previous test.
    metadata = mask_split(tmp_path, {"a": ([rows(0, 49), rows(50, 99)], None)})
    scoremap = np.zeros((224, 224))
    scoremap[:50], scoremap[50:100], scoremap[100:150] = 0.9, 0.2, 0.5
    evaluator = MaskEvaluator(metadata, tmp_path)
    evaluator.accumulate(scoremap[None], ["a"])
    assert evaluator.compute().pxap == pytest.approx(100 * (0.5 + 0.5 * 2 / 3), abs=1e-9)


def test_missing_mask_file_is_named(tmp_path):
    metadata = mask_split(tmp_path, {"a": ([rows(0, 99)], None)})
    (tmp_path / "a_0.png").unlink()
    with pytest.raises(ScoremapError, match=r"mask of image 'a': .*a_0.png is missing"):
        MaskEvaluator(metadata, tmp_path).accumulate(np.zeros((1, 224, 224)), ["a"])


def test_records_keep_each_image_histograms(tmp_path):
    # a: foreground rows 0..99 (22400 px), background the other 27776. b: foreground rows 0..9 (2240
    # px), ignore rows 10..19, background the other 45696. Accumulated b first: records follow the metadata.
    metadata = mask_split(tmp_path, {"a": ([rows(0, 99)], None), "b": ([rows(0, 9)], rows(10, 19))})
    evaluator = MaskEvaluator(metadata, tmp_path)
    scoremap = np.zeros((224, 224))
    scoremap[:50], scoremap[50:100], scoremap[100:150] = 0.9, 0.2, 0.5
    evaluator.accumulate(scoremap[None], ["b"])
    evaluator.accumulate(scoremap[None], ["a"])
    result = evaluator.compute()
    assert result.records.image_ids.tolist() == ["a", "b"]
    assert result.records.foreground.sum(axis=1).tolist() == [22400, 2240]
    assert result.records.background.sum(axis=1).tolist() == [27776, 45696]
    low, high = confidence_intervals(result, samples=200)["pxap"]
    assert low < result.pxap < high
