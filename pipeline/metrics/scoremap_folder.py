"""Evaluate score maps saved by any WSOL code, in the reference's layout: one
``<scoremap_root>/<image_id>.npy`` (a 2-D float array in [0, 1]) per image of the metadata folder."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.metadata import Metadata, load_metadata, read_labels
from pipeline.metrics.bootstrap import confidence_intervals
from pipeline.metrics.box_evaluator import BoxEvaluator
from pipeline.metrics.conventions import RESIZE_LENGTH, ScoremapError, check_scoremap_shape
from pipeline.metrics.mask_evaluator import MaskEvaluator


def scoremap_path(scoremap_root: Path, image_id: str) -> Path:
    return scoremap_root / f"{image_id}.npy"


def load_scoremap(scoremap_root: Path, image_id: str, length: int = RESIZE_LENGTH) -> np.ndarray:
    """One image's (length, length) float score map; a missing, unreadable, misshapen or integer file is an error."""
    path = scoremap_path(scoremap_root, image_id)
    if not path.is_file():
        raise ScoremapError(f"score map of image {image_id!r}: {path} is missing")
    try:
        scoremap = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ScoremapError(f"score map of image {image_id!r}: {path} is not a readable .npy file: {error}") from None
    check_scoremap_shape(scoremap, image_id, str(path), length)
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise ScoremapError(f"score map of image {image_id!r} ({path}): expected floating point values in [0, 1], "
                            f"got dtype {scoremap.dtype}")
    return scoremap


def _check_inside(scoremap_root: Path, metadata: Metadata) -> None:
    """Refuse an image id whose score map lies outside the root (an absolute id, or one that climbs out with '..')."""
    for image_id in metadata.image_ids:
        name = os.path.normpath(f"{image_id}.npy")
        if os.path.isabs(name) or name.split(os.sep)[0] == os.pardir:
            raise ScoremapError(f"{metadata.root / 'image_ids.txt'}: image id {image_id!r} names a score map "
                                f"outside {scoremap_root}")


def _batches(scoremap_root: Path, image_ids: Sequence[str], batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(image ids, (B, 224, 224) maps) batches in metadata order; each batch's files read by 4 threads."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        for i in range(0, len(image_ids), batch_size):
            chunk = list(image_ids[i:i + batch_size])
            yield chunk, np.stack(list(pool.map(partial(load_scoremap, scoremap_root), chunk)))


def evaluate_scoremap_folder(metadata_root: str | Path, scoremap_root: str | Path, mask_root: str | Path | None = None,
                             cam_curve_interval: float = 0.01, iou_thresholds: Sequence[int] = (30, 50, 70),
                             predictions: str | Path | None = None, single_contour: bool = False,
                             batch_size: int = 64, bootstrap: int = 0, records: str | Path | None = None) -> dict:
    """Box metrics (or PxAP, when ``mask_root`` is given) of a folder of score maps, as a JSON-ready dict.

    ``predictions``: an optional ``<image_id>,<predicted label>`` file for top-1 loc and top-1 cls.
    ``bootstrap``: resamples for 95% confidence intervals under "ci95" ({metric: [low, high]}, seed 0);
    0 for none. ``records``: where to save the per-image records (.npz) the intervals come from.
    """
    if mask_root is not None and predictions is not None:
        raise ValueError("class predictions apply to box metrics; PxAP (mask_root) takes none")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap resamples must be a whole number >= 0, got {bootstrap!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    scoremap_root = Path(scoremap_root)
    metadata = load_metadata(metadata_root, "masks" if mask_root is not None else "boxes")
    _check_inside(scoremap_root, metadata)
    if mask_root is not None:
        evaluator = MaskEvaluator(metadata, mask_root, cam_curve_interval)
    else:
        evaluator = BoxEvaluator(metadata, cam_curve_interval, iou_thresholds, single_contour)
    predicted = read_labels(predictions, metadata.image_ids) if predictions is not None else None
    for image_ids, scoremaps in _batches(scoremap_root, metadata.image_ids, batch_size):
        sources = [str(scoremap_path(scoremap_root, i)) for i in image_ids]
        if mask_root is not None:
            evaluator.accumulate(scoremaps, image_ids, sources=sources)
        else:
            labels = [predicted[i] for i in image_ids] if predicted is not None else None
            evaluator.accumulate(scoremaps, image_ids, labels, sources=sources)
    result = evaluator.compute()
    if records is not None:
        Path(records).parent.mkdir(parents=True, exist_ok=True)
        result.records.save(records)
    out = {"cam_curve_interval": cam_curve_interval, **result.to_dict()}
    if bootstrap:
        out["ci95"] = confidence_intervals(result, bootstrap)
    return out
