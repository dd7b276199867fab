"""PxAP: pixel average precision of score maps against GT masks with ignore regions (OpenImages30k).

As the reference ``MaskEvaluator`` (clovaai/wsolevaluation): score-map values (not quantised) of
foreground and background pixels are histogrammed over the bins [tau_0, tau_1), ...,
[tau_last, 1), [1, 2), [2, 3]; ignore pixels count as neither. At a bin's left edge e, pixels scoring
>= e are predicted foreground; PxAP = 100 * sum over edges of precision * (recall step), summed
where precision is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.metadata import MaskFiles, Metadata
from pipeline.metrics.conventions import RESIZE_LENGTH, ScoremapError, cam_thresholds, check_scoremaps
from pipeline.metrics.coverage import Coverage

FOREGROUND, BACKGROUND, IGNORE = 1, 0, 255


def pr_curve(foreground: np.ndarray, background: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """PxAP in % of pixel counts per bin (bins,) summed over images, foreground and background.

    Returns PxAP, then precision, recall and whether precision is defined (each (bins,)), from the
    top bin down: index i holds the pixels scoring >= the left edge of bin bins - 1 - i.
    """
    tp = foreground[::-1].cumsum().astype(np.float64)
    fp = background[::-1].cumsum().astype(np.float64)
    fn = tp[-1] - tp
    defined = tp + fp != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    pxap = (precision[1:] * np.diff(recall))[defined[1:]].sum() * 100
    return float(pxap), precision, recall, defined


@dataclass(frozen=True)
class MaskRecords:
    """Per-image pixel histograms of a split, in metadata order: what the bootstrap resamples.

    image_ids: (N,) str; edges: (bins + 1,) the bin edges, thresholds tau then 1, 2, 3; foreground,
    background: (N, bins) int32 pixel counts per bin (ignore pixels in neither).
    """

    image_ids: np.ndarray
    edges: np.ndarray
    foreground: np.ndarray
    background: np.ndarray

    def __post_init__(self):
        shape = (len(self.image_ids), len(self.edges) - 1)
        if self.foreground.shape != shape or self.background.shape != shape:
            raise ValueError(f"mask records of {shape[0]} images, {shape[1]} bins: histograms have shapes "
                             f"{self.foreground.shape} and {self.background.shape}")

    def save(self, path: str | Path) -> None:
        """One .npz at exactly ``path``: image_ids, edges, foreground, background."""
        with open(path, "wb") as file:
            np.savez_compressed(file, image_ids=self.image_ids, edges=self.edges, foreground=self.foreground,
                                background=self.background)

    @classmethod
    def load(cls, path: str | Path) -> MaskRecords:
        with np.load(path, allow_pickle=False) as data:
            return cls(image_ids=data["image_ids"], edges=data["edges"], foreground=data["foreground"],
                       background=data["background"])


@dataclass(frozen=True)
class MaskResult:
    """PxAP in % and the PR curve's points, by decreasing threshold, where precision is defined."""

    images: int
    pxap: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    records: MaskRecords

    def to_dict(self, curves: bool = True) -> dict:
        out: dict[str, object] = {"images": self.images, "pxap": self.pxap}
        if curves:
            out["pr_curve"] = {"thresholds": self.thresholds.tolist(), "precision": self.precision.tolist(),
                               "recall": self.recall.tolist()}
        return out


def _read_mask(path: Path, image_id: str, length: int) -> np.ndarray:
    """A mask image -> (length, length) bool of its pixels > 0.5 after nearest-neighbour resizing."""
    import cv2  # only PxAP reads masks; OpenCV's import takes ~0.2 s

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ScoremapError(f"mask of image {image_id!r}: {path} is missing or not a readable image")
    return cv2.resize(image.astype(np.float32), (length, length), interpolation=cv2.INTER_NEAREST) > 0.5


def ground_truth_mask(mask_root: Path, files: MaskFiles, image_id: str, length: int = RESIZE_LENGTH) -> np.ndarray:
    """(length, length) uint8: FOREGROUND on any instance mask, IGNORE inside the ignore mask but off
    every instance, BACKGROUND elsewhere. An empty ignore path means no ignore region."""
    foreground = np.zeros((length, length), np.bool_)
    for name in files.masks:
        foreground |= _read_mask(mask_root / name, image_id, length)
    out = foreground.astype(np.uint8) * FOREGROUND
    if files.ignore:
        out[_read_mask(mask_root / files.ignore, image_id, length) & ~foreground] = IGNORE
    return out


class MaskEvaluator:
    """Streaming PxAP of one split: ``accumulate`` per batch, ``compute`` at the end. The result's
    ``records`` keep each image's histograms for bootstrap confidence intervals."""

    def __init__(self, metadata: Metadata, mask_root: str | Path, cam_curve_interval: float = 0.01,
                 resize_length: int = RESIZE_LENGTH):
        if metadata.masks is None:
            raise ValueError(f"{metadata.root}: PxAP needs mask metadata, localization.txt holds boxes")
        self.metadata = metadata
        self.mask_root = Path(mask_root)
        self.resize_length = resize_length
        # Right edges of the bins [0, bw), ..., [1 - bw, 1), [1, 2), [2, 3].
        self.edges = np.append(cam_thresholds(cam_curve_interval), [1.0, 2.0, 3.0])
        # Per image (metadata row): pixels per bin, (N, bins); at most 224 * 224 each.
        self._foreground = np.zeros((len(metadata), len(self.edges) - 1), np.int32)
        self._background = np.zeros((len(metadata), len(self.edges) - 1), np.int32)
        self._coverage = Coverage(metadata)

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str], sources: Sequence[str] | None = None) -> None:
        """Add a batch of (B, 224, 224) score maps in [0, 1] and their image ids."""
        check_scoremaps(scoremaps, image_ids, self.resize_length, sources)
        rows = self._coverage.rows(image_ids)
        masks = self.metadata.masks
        assert masks is not None  # checked in __init__
        for row, scoremap, image_id in zip(rows, scoremaps, image_ids, strict=False):
            gt = ground_truth_mask(self.mask_root, masks[image_id], image_id, self.resize_length)
            self._foreground[row] = np.histogram(scoremap[gt == FOREGROUND], bins=self.edges)[0]
            self._background[row] = np.histogram(scoremap[gt == BACKGROUND], bins=self.edges)[0]
        self._coverage.mark(rows)

    def compute(self) -> MaskResult:
        images = self._coverage.check_complete()
        foreground = self._foreground.sum(axis=0, dtype=np.int64)
        background = self._background.sum(axis=0, dtype=np.int64)
        if not foreground.any():
            raise ScoremapError(f"{self.metadata.root}: no foreground pixel in any GT mask")
        pxap, precision, recall, defined = pr_curve(foreground, background)
        records = MaskRecords(image_ids=np.array(self.metadata.image_ids, np.str_), edges=self.edges,
                              foreground=self._foreground, background=self._background)
        return MaskResult(images=images, pxap=pxap, thresholds=self.edges[-2::-1][defined],
                          precision=precision[defined], recall=recall[defined], records=records)
