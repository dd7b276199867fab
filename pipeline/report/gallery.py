"""The report's pictures of test images: the CAM gallery, a tile per outcome (the best box, a typical
one and one per failure mode) for each method; and the dataset's examples with their GT boxes and regions.

Outcomes, from a box's IoU with the GT box it overlaps most and its area over that GT box's (both
with the protocol's inclusive pixel convention): a success has IoU >= 0.5; a failure is *too large*
where its area is at least twice the GT box's (the box takes in context), *too small* where it is
at most half (the box sits on a part; no box at all counts here), else *misplaced* (about the
right size, in the wrong place). Each row shows its best box (highest IoU), the median one, and the
median of each failure mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.dag.paths import Layout
from pipeline.data.dataset_folder import DatasetInfo, region_map_path
from pipeline.data.images import load_rgb
from pipeline.data.loading import SplitImages, eval_transform
from pipeline.data.metadata import Metadata
from pipeline.formats.export_folder import load_exported
from pipeline.metrics.conventions import box_iou, rescale_boxes
from pipeline.report.figures import (
    FONT,
    GT_COLOUR,
    LABEL_PAD,
    LABEL_SCALE,
    PREDICTED_COLOUR,
    gt_boxes_224,
    overlay,
    predicted_box,
    save_picture,
    to_rgb,
)
from pipeline.report.figures import grid as tile_grid
from pipeline.settings.config import Config
from pipeline.settings.registry import METHODS

SUCCESS_IOU = 0.5
SIZE_FACTOR = 2.0  # a failing box at least this many times the GT box's area is too large; at most 1/it, too small
OUTCOMES = ("best", "median", "too large", "too small", "misplaced")
POOL = 100  # test images, spread evenly over the split, among which the gallery picks its tiles
TILE = 224  # px, the CAM grid
REGION_COLOURS = ((70, 70, 70), (150, 190, 140), (70, 130, 230), (250, 200, 40))  # RGB by region index; others white
EMPTY = (200, 200, 200)  # RGB of a tile without an image (an outcome no image has)


def box_outcomes(boxes: np.ndarray, gt: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, area ratio) of each predicted box against the GT box it overlaps most (the first on ties).

    boxes: (N, 4) x0, y0, x1, y1 on the CAM grid; gt: per image, (G, 4) GT boxes on the same grid.
    Returns two (N,) float arrays: IoU in [0, 1]; predicted area / that GT box's area.
    """
    ious, ratios = np.zeros(len(boxes)), np.zeros(len(boxes))
    for n, (box, truth) in enumerate(zip(boxes, gt, strict=True)):
        overlaps = [box_iou(*box, *g) for g in truth]
        g = truth[int(np.argmax(overlaps))]
        ious[n] = max(overlaps)
        ratios[n] = (box[2] - box[0] + 1) * (box[3] - box[1] + 1) / ((g[2] - g[0] + 1) * (g[3] - g[1] + 1))
    return ious, ratios


def classify(ious: np.ndarray, ratios: np.ndarray) -> dict[str, np.ndarray]:
    """(N,) bool masks of the success and each failure mode (module docstring), from (N,) IoUs and (N,)
    area ratios (:func:`box_outcomes`); every image in exactly one."""
    failed = ious < SUCCESS_IOU
    modes = {"success": ~failed, "too large": failed & (ratios >= SIZE_FACTOR)}
    modes["too small"] = failed & (ratios <= 1 / SIZE_FACTOR)
    modes["misplaced"] = failed & ~modes["too large"] & ~modes["too small"]
    return modes


def pick_outcomes(ious: np.ndarray, ratios: np.ndarray) -> dict[str, int | None]:
    """The image index shown for each of :data:`OUTCOMES`, from (N,) IoUs and (N,) area ratios
    (:func:`box_outcomes`): the first highest IoU; the median IoU (the lower of two middles, the first
    of equal IoUs); per failure mode (:func:`classify`) the median IoU among its images, None where it
    has none."""
    modes = classify(ious, ratios)

    def median(members: np.ndarray) -> int | None:
        if not members.any():
            return None
        indices = np.flatnonzero(members)
        return int(indices[np.argsort(ious[indices], kind="stable")[(len(indices) - 1) // 2]])

    return {
        "best": int(np.argmax(ious)),
        "median": median(np.ones(len(ious), bool)),
        **{mode: median(modes[mode]) for mode in OUTCOMES[2:]},
    }


def _footer(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` with ``text`` in small white letters on a black band along its bottom edge."""
    scale = 0.35
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    cv2.rectangle(rgb, (0, rgb.shape[0] - height - baseline - 4), (width + 4, rgb.shape[0]), (0, 0, 0), cv2.FILLED)
    cv2.putText(rgb, text, (2, rgb.shape[0] - baseline - 2), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return rgb


def _legend(picture: np.ndarray, entries: Sequence[tuple[tuple[int, int, int], bool, str]]) -> np.ndarray:
    """``picture`` over a white band with one legend line: per entry an RGB swatch (an outline where
    the bool says so, else filled) and its text."""
    (_, height), baseline = cv2.getTextSize("Ag", FONT, LABEL_SCALE, 1)
    band = np.full((height + baseline + 2 * LABEL_PAD, picture.shape[1], 3), 255, np.uint8)
    x = LABEL_PAD
    for colour, outline, text in entries:
        cv2.rectangle(band, (x, LABEL_PAD), (x + height, LABEL_PAD + height), colour, 2 if outline else cv2.FILLED)
        x += height + LABEL_PAD
        cv2.putText(band, text, (x, LABEL_PAD + height), FONT, LABEL_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, FONT, LABEL_SCALE, 1)[0][0] + 3 * LABEL_PAD
    return np.concatenate([picture, band])


def outcome_gallery(
    config: Config, layout: Layout, info: DatasetInfo, backbone: str, path: Path
) -> dict[str, dict[str, int]]:
    """Saved at ``path``: a row per method (first seed; its name on the left), a column per outcome (at most
    ``report.gallery_images``; its name on top), each tile one of :data:`POOL` test images run through
    the exported network: its CAM, the GT box red, the box at the run's val-optimal threshold green,
    its class and IoU on top, its image id below; a legend line at the bottom. Needs GT boxes.
    Returns method -> how many of the pool's images fall in each of :func:`classify`'s classes."""
    metadata = info.metadata("test")
    pool = np.unique(np.linspace(0, len(metadata) - 1, min(POOL, len(metadata))).round().astype(int))
    image_ids = [metadata.image_ids[i] for i in pool]
    gt = gt_boxes_224(metadata, image_ids)
    outcomes = OUTCOMES[: config.report.gallery_images]
    tiles, counts = [], {}
    for method in config.methods:
        exported, meta = load_exported(layout.export(config.dataset, backbone, method, config.seeds[0]))
        images = SplitImages(info, "test", eval_transform(meta.input_settings(config.data)))
        batch = torch.stack([images[int(i)][0] for i in pool])
        labels = torch.tensor([images.labels[int(i)] for i in pool])
        with torch.no_grad():
            cams = exported(batch, labels)[1].numpy()
        boxes = np.array([predicted_box(cam, meta.cam_threshold) for cam in cams])
        ious, ratios = box_outcomes(boxes, [gt[i] for i in image_ids])
        picks = pick_outcomes(ious, ratios)
        counts[method] = {mode: int(members.sum()) for mode, members in classify(ious, ratios).items()}
        rgb = to_rgb(batch)
        for outcome in outcomes:
            k = picks[outcome]
            if k is None:
                tiles.append(_footer(np.full((TILE, TILE, 3), EMPTY, np.uint8), f"none of {len(pool)} images"))
                continue
            caption = f"{info.class_names[int(labels[k])]} IoU {ious[k]:.2f}"
            tile = overlay(rgb[k], cams[k], gt[image_ids[k]], boxes[k], caption=caption)  # type: ignore[arg-type]
            tiles.append(_footer(tile, image_ids[k]))
    picture = tile_grid(
        tiles, len(outcomes), row_labels=[METHODS[m].display for m in config.methods], column_labels=list(outcomes)
    )
    legend = [(GT_COLOUR, True, "ground truth"), (PREDICTED_COLOUR, True, "predicted (largest region above tau*)")]
    save_picture(path, _legend(picture, legend))
    return counts


def class_examples(metadata: Metadata, per_class: int) -> dict[int, list[str]]:
    """Class index (ascending) -> the ids of its first ``per_class`` images in metadata order."""
    examples: dict[int, list[str]] = {}
    for image_id in metadata.image_ids:
        chosen = examples.setdefault(metadata.class_labels[image_id], [])
        if len(chosen) < per_class:
            chosen.append(image_id)
    return dict(sorted(examples.items()))


def dataset_examples(
    info: DatasetInfo, region_names: Sequence[str], per_class: int, path: Path, side: int = 160
) -> Path:
    """The test split's first ``per_class`` images of each class (a row per class, its name on the
    left), each at ``side`` px with its GT boxes red and, where the dataset has region maps, its map
    beside it coloured by region (a legend line at the bottom)."""
    metadata = info.metadata("test")
    palette = np.full((256, 3), 255, np.uint8)
    palette[: len(REGION_COLOURS)] = REGION_COLOURS
    tiles: list[np.ndarray] = []
    examples = class_examples(metadata, per_class)
    for image_ids in examples.values():
        for image_id in image_ids:
            rgb = cv2.resize(
                np.asarray(load_rgb(info.image_path("test", image_id), image_id)),
                (side, side),
                interpolation=cv2.INTER_NEAREST,
            )
            for box in (
                rescale_boxes(metadata.boxes[image_id], metadata.image_sizes[image_id], side)
                if metadata.boxes is not None
                else ()
            ):
                cv2.rectangle(rgb, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), GT_COLOUR, 2)
            tiles.append(rgb)
            if info.region_root is not None:
                map_path = region_map_path(info.region_root, image_id)
                regions = cv2.imread(str(map_path), cv2.IMREAD_UNCHANGED)
                if regions is None:
                    raise FileNotFoundError(f"{map_path}: the region map of test image {image_id!r} is missing")
                regions = cv2.resize(regions, (side, side), interpolation=cv2.INTER_NEAREST)
                tiles.append(palette[regions])
    columns = per_class * (2 if info.region_root is not None else 1)
    picture = tile_grid(tiles, columns, row_labels=[info.class_names[c] for c in examples])
    legend = [(GT_COLOUR, True, "ground truth box")]
    if info.region_root is not None:
        legend += [(colour, False, name) for colour, name in zip(REGION_COLOURS, region_names, strict=False)]
    return save_picture(path, _legend(picture, legend))
