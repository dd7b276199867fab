"""Region shares of CAMs on hand-drawn maps with shares worked out by hand, the mask fallback, and
the synthetic generator's region maps against what it renders."""

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.dataset_folder import region_map_path
from pipeline.data.metadata import MaskFiles, Metadata, load_metadata
from pipeline.data.synth import REGION_FOLDER, REGIONS, generate, render, sample_scene
from pipeline.metrics.conventions import ScoremapError
from pipeline.metrics.regions import MASK_REGIONS, RegionEvaluator, bootstrap_ci, largest_component_boxes
from pipeline.settings.config import SPLITS
from tests.helpers import config

PIXELS = 224 * 224
BACKGROUND, CONTEXT, BODY, PART = range(4)


def evaluate(labels: dict[str, np.ndarray], scoremaps: dict[str, np.ndarray], interval: float = 0.01):
    """RegionResult of hand-drawn (224, 224) label maps (REGIONS indices) and score maps."""
    ids = tuple(labels)
    metadata = Metadata(Path("hand"), ids, {i: 0 for i in ids}, {i: (224, 224) for i in ids})
    evaluator = RegionEvaluator(metadata, REGIONS, labels.__getitem__, interval)
    evaluator.accumulate(np.stack([scoremaps[i] for i in ids]), list(ids))
    return evaluator.compute()


def quadrants() -> np.ndarray:
    """Background above row 112, context below it; a 50x40 body at x 20..69, y 30..69 whose
    20x20 part is at x 20..39, y 40..59."""
    labels = np.zeros((224, 224), np.uint8)
    labels[112:] = CONTEXT
    labels[30:70, 20:70] = BODY
    labels[40:60, 20:40] = PART
    return labels


FRACTIONS = np.array([112 * 224 - 2000, 112 * 224, 2000 - 400, 400]) / PIXELS  # of quadrants()


def test_a_map_on_the_part_only_puts_all_mass_there():
    cam = np.zeros((224, 224))
    cam[40:60, 20:40] = 0.7
    result = evaluate({"a": quadrants()}, {"a": cam})
    np.testing.assert_allclose(result.mass, [0, 0, 0, 1])
    np.testing.assert_allclose(result.prior, FRACTIONS)
    assert result.mass_images == 1 and result.region_names == REGIONS


def test_a_uniform_map_gets_the_region_pixel_fractions():
    result = evaluate({"a": quadrants()}, {"a": np.full((224, 224), 0.3)})
    np.testing.assert_allclose(result.mass, FRACTIONS)
    np.testing.assert_allclose(result.mass_per_image, FRACTIONS[None], rtol=1e-6)


def test_mass_half_on_the_part_half_on_background_and_images_weigh_one_each():
    cam = np.zeros((224, 224))
    cam[40:60, 20:40] = 1.0  # 400 px of mass 1
    cam[0:10, 100:180] = 0.5  # 800 px of mass 0.5: as much mass on background
    uniform = np.full((224, 224), 0.3)
    result = evaluate({"a": quadrants(), "b": quadrants()}, {"a": cam, "b": uniform})
    np.testing.assert_allclose(result.mass_per_image[0], [0.5, 0, 0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(result.mass, (np.array([0.5, 0, 0, 0.5]) + FRACTIONS) / 2, rtol=1e-6)


def test_ignored_pixels_count_nowhere():
    labels = np.full((224, 224), 255, np.uint8)  # ignore, but for two regions of 100 px
    labels[0:10, 0:10] = PART
    labels[100:110, 100:110] = BODY
    cam = np.zeros((224, 224))
    cam[0:10, 0:10] = 1.0
    cam[100:110, 100:110] = 0.5
    cam[200:, 200:] = 1.0  # on ignored pixels
    result = evaluate({"a": labels}, {"a": cam})
    np.testing.assert_allclose(result.prior, [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(result.mass, [0, 0, 1 / 3, 2 / 3], rtol=1e-6)


def test_a_map_without_mass_is_left_out_and_counted():
    result = evaluate({"a": quadrants(), "b": quadrants()}, {"a": np.zeros((224, 224)), "b": np.full((224, 224), 0.5)})
    assert result.mass_images == 1 and np.isnan(result.mass_per_image[0]).all()
    np.testing.assert_allclose(result.mass, FRACTIONS)
    assert (result.box_images == 1).all()  # the zero map has no box at any tau


def test_box_of_the_largest_component_at_a_known_threshold():
    # Labels: part on x < 70, body on 70 <= x < 150, context beyond. A 50x60 rectangle of 0.8 at
    # x 50..99, y 60..119 and a 10x10 square of 0.9 at x 180..189, y 10..19; uint8 values 204 and
    # 229. At tau 0.5 the cut is int(0.5 * 229) = 114: both are on, the rectangle is the larger, so
    # the box is the rectangle: 20 of its 50 columns on the part, 30 on the body. At tau 0.9 the cut
    # is 206: only the square is on, wholly on context.
    labels = np.full((224, 224), CONTEXT, np.uint8)
    labels[:, :70] = PART
    labels[:, 70:150] = BODY
    cam = np.zeros((224, 224))
    cam[60:120, 50:100] = 0.8
    cam[10:20, 180:190] = 0.9
    result = evaluate({"a": labels}, {"a": cam})
    np.testing.assert_allclose(result.box_at(0.5), [0, 0, 0.6, 0.4])
    np.testing.assert_allclose(result.box_at(0.9), [0, 1, 0, 0])
    assert result.box.shape == (100, 4) and (result.box_images == 1).all()
    with pytest.raises(ValueError, match="not one of the evaluated thresholds"):
        result.box_at(0.505)


def test_diagonal_neighbours_are_one_component():
    # A 10x10 square at x 0..9, y 0..9 and one at x 10..19, y 10..19 touch only at a corner:
    # 8-connected, one component whose box is x 0..19, y 0..19, half of it on the part (x < 10).
    labels = np.full((224, 224), BODY, np.uint8)
    labels[:, :10] = PART
    cam = np.zeros((224, 224))
    cam[0:10, 0:10] = cam[10:20, 10:20] = 1.0
    result = evaluate({"a": labels}, {"a": cam}, interval=0.5)
    np.testing.assert_allclose(result.box, [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])


def reference_boxes(on: np.ndarray) -> tuple[int, int, int, int]:
    """OpenCV's components; the largest, ties to the one whose first pixel in raster order is first."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(on.astype(np.uint8), connectivity=8)
    if count == 1:
        return -1, -1, -1, -1
    flat = components.ravel()
    first = {label: index for index, label in reversed(list(enumerate(flat)))}
    areas = stats[1:, cv2.CC_STAT_AREA]
    label = min((first[k + 1], k + 1) for k in np.flatnonzero(areas == areas.max()))[1]
    x, y, w, h = stats[label, :4]
    return x, y, x + w - 1, y + h - 1


def test_largest_component_boxes_equal_opencv_on_random_maps():
    rng = np.random.default_rng(0)
    low = rng.random((6, 8, 8))
    quantised = np.stack([cv2.resize(m, (40, 30), interpolation=cv2.INTER_NEAREST) for m in low])
    quantised = (quantised * 255 * (rng.random(quantised.shape) < 0.7)).astype(np.uint8)  # specks: ties
    cuts = np.tile(np.arange(0, 256, 5), (len(quantised), 1))
    boxes = largest_component_boxes(quantised, cuts)
    for b, k in np.ndindex(cuts.shape):
        assert tuple(boxes[b, k]) == reference_boxes(quantised[b] > cuts[b, k]), (b, cuts[b, k])


def test_region_labels_outside_the_names_are_an_error():
    labels = quadrants()
    labels[0, 0] = 7
    with pytest.raises(ScoremapError, match="image 'a': value 7 names no region"):
        evaluate({"a": labels}, {"a": np.zeros((224, 224))})


def test_mask_fallback_splits_object_and_background_without_the_ignore_region(tmp_path):
    # 112x112 masks, doubled to 224: object rows 0..27, columns 0..55 (56 x 112 = 6272 px at 224);
    # the ignore region is the bottom half (112 x 224 = 25088 px). A uniform map: object 6272 of
    # the 25088 labelled pixels.
    mask, ignore = np.zeros((112, 112), np.uint8), np.zeros((112, 112), np.uint8)
    mask[:28, :56] = 255
    ignore[56:] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    cv2.imwrite(str(tmp_path / "i.png"), ignore)
    metadata = Metadata(tmp_path, ("a",), {"a": 0}, {"a": (112, 112)}, masks={"a": MaskFiles(("m.png",), "i.png")})
    evaluator = RegionEvaluator.from_masks(metadata, tmp_path)
    cam = np.full((1, 224, 224), 0.4)
    cam[0, 112:] = 1.0  # on the ignore region: no effect
    evaluator.accumulate(cam, ["a"])
    result = evaluator.compute()
    assert result.region_names == MASK_REGIONS
    np.testing.assert_allclose(result.prior, [0.75, 0.25])
    np.testing.assert_allclose(result.mass, [0.75, 0.25], rtol=1e-6)
    # uint8 values 102 and 255: at tau 0.3 (cut 76) the box is the whole image, at tau 0.5 (cut 127)
    # the ignore region, which has no labelled pixel: no image counts there
    np.testing.assert_allclose(result.box_at(0.3), [0.75, 0.25])
    assert np.isnan(result.box_at(0.5)).all() and result.box_images[50] == 0


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    shares = np.stack([rng.random(200), np.full(200, 0.25)], 1).astype(np.float32)
    shares[3] = np.nan
    interval = bootstrap_ci(shares, resamples=500, seed=4)
    np.testing.assert_array_equal(interval, bootstrap_ci(shares, resamples=500, seed=4))
    mean = np.nanmean(shares[:, 0])
    assert interval[0, 0] < mean < interval[0, 1] and interval[0, 1] - interval[0, 0] < 0.2
    np.testing.assert_allclose(interval[1], [0.25, 0.25])


# ----------------------------------------------------------------------------------- synth regions

SMALL = {"datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 4}, "datasets.synth.classes": 3}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    settings = config(**SMALL).datasets.synth
    root = tmp_path_factory.mktemp("synth")
    generate(settings, root)
    return settings, root


def test_synth_region_maps_are_what_is_drawn(generated):
    settings, root = generated
    side = settings.image_size
    own_seen = foreign_seen = 0
    for split_index, split in enumerate(SPLITS):
        metadata = load_metadata(root / "metadata" / split)
        for image_id in metadata.image_ids:
            label, n = metadata.class_labels[image_id], int(Path(image_id).stem)
            scene = sample_scene(np.random.default_rng([settings.seed, split_index, label, n]), label, settings)
            image, mask = render(scene, side)
            regions = cv2.imread(str(region_map_path(root / REGION_FOLDER, image_id)), cv2.IMREAD_UNCHANGED)
            assert regions.shape == (side, side) and regions.dtype == np.uint8
            # the written image is render's, pixel for pixel
            np.testing.assert_array_equal(cv2.imread(str(root / image_id)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            np.testing.assert_array_equal((regions >= BODY), mask > 0)
            head = (image == scene.head_colour).all(axis=-1)
            np.testing.assert_array_equal(regions == PART, head)
            # distractors' footprint: what changes when only their colours change
            black, white = (replace(scene, distractors=tuple((*d[:4], (v, v, v)) for d in scene.distractors))
                            for v in (0, 255))
            footprint = (render(black, side)[0] != render(white, side)[0]).any(axis=-1)
            assert (regions[footprint] == BACKGROUND).all()
            own = scene.context == scene.label
            rest = regions[~footprint & (mask == 0)]
            assert (rest == (CONTEXT if own else BACKGROUND)).all()
            own_seen += own
            foreign_seen += not own
    assert own_seen and foreign_seen


def test_synth_region_maps_agree_with_the_masks_at_224(generated):
    settings, root = generated
    boxes = load_metadata(root / "metadata" / "test")
    masks = load_metadata(root / "metadata_masks" / "test")
    from_maps = RegionEvaluator.from_region_maps(boxes, root / REGION_FOLDER)
    from_masks = RegionEvaluator.from_masks(masks, root)
    for image_id in boxes.image_ids:
        regions, gt = from_maps.region_of(image_id), from_masks.region_of(image_id)
        np.testing.assert_array_equal(regions >= BODY, gt == 1)
