"""Where a CAM goes: its share on each region of the image, the two failure modes of WSOL as numbers
(a CAM only on the discriminative part; a CAM spilling onto class-correlated background).

Each image has a (224, 224) label map: a region index into ``region_names``, or ``IGNORE`` (pixel
left out of every measure). It comes from the dataset's region maps (synth: ``REGIONS``, nearest-
neighbour resized) or, for a dataset with GT masks only, from its mask (``MASK_REGIONS``, the
mask's ignore region left out). Per region r, averaged over images, each weighing 1:

* prior: r's share of the image's labelled pixels (what a map spread uniformly would get);
* mass: sum(cam * [region == r]) / sum(cam), both over labelled pixels, on the maps as given;
  an image whose map has no mass there is left out (``mass_images`` counts the others);
* box at each tau: the map quantised and thresholded as the box evaluator does (on: uint8 value
  > int(tau * max value)); the box is the pixel extent, inclusive, of the largest 8-connected
  component of on-pixels (most pixels; ties: the one whose first pixel in raster order comes
  first; the box evaluator's contour box of it reaches one pixel further right and down); share =
  box pixels on r / the box's labelled pixels, summed on an integral image per region. An image
  without a box (its uint8 map all 0) or without a labelled box pixel at a tau is left out at that
  tau (``box_images``). Read the shares at the box evaluator's optimal tau with
  :meth:`RegionResult.box_at`.

An image without any labelled pixel is left out of every mean. Memory: O(K * R) sums and one row
of R float32 mass shares per image (for :func:`bootstrap_ci`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numba
import numpy as np

from pipeline.data.dataset_folder import region_map_path
from pipeline.data.metadata import Metadata
from pipeline.data.synth import REGIONS
from pipeline.metrics.contour_boxes import LEVELS, _find, _pixels_by_value
from pipeline.metrics.conventions import (
    RESIZE_LENGTH,
    ScoremapError,
    cam_thresholds,
    check_scoremaps,
    integer_thresholds,
    quantise,
)
from pipeline.metrics.coverage import Coverage
from pipeline.metrics.mask_evaluator import IGNORE, ground_truth_mask

MASK_REGIONS = ("background", "object")  # ground_truth_mask's BACKGROUND, FOREGROUND
RegionOf = Callable[[str], np.ndarray]  # image id -> (224, 224) uint8 region indices or IGNORE


@dataclass(frozen=True)
class RegionResult:
    """Mean shares in [0, 1], one column per region in ``region_names`` order."""

    images: int
    region_names: tuple[str, ...]
    thresholds: np.ndarray  # tau, (K,)
    prior: np.ndarray  # (R,) region pixel shares of the images
    mass: np.ndarray  # (R,) CAM mass shares; NaN if no image counts
    mass_images: int  # images in the mass mean
    mass_per_image: np.ndarray  # (N, R) float32 in metadata order; NaN rows: left out
    box: np.ndarray  # (K, R) shares of the box at each tau; NaN rows where no image counts
    box_images: np.ndarray  # (K,) int64, images in each row's mean

    def box_at(self, threshold: float) -> np.ndarray:
        """(R,) box shares at one of ``thresholds`` (e.g. the box evaluator's optimal tau)."""
        index = np.flatnonzero(np.isclose(self.thresholds, threshold, rtol=0, atol=1e-9))
        if not len(index):
            raise ValueError(f"{threshold} is not one of the evaluated thresholds")
        return self.box[index[0]]


class RegionEvaluator:
    """Streaming region shares of one split: ``accumulate`` per batch, ``compute`` at the end.

    ``region_of`` gives each image's label map; :meth:`from_region_maps` and :meth:`from_masks`
    build it from a dataset's files. Score maps are (224, 224) arrays in [0, 1], one per image of
    ``metadata`` and each exactly once.
    """

    def __init__(self, metadata: Metadata, region_names: Sequence[str], region_of: RegionOf,
                 cam_curve_interval: float = 0.01, resize_length: int = RESIZE_LENGTH):
        if not 0 < len(region_names) < IGNORE:
            raise ValueError(f"between 1 and {IGNORE - 1} regions, got {len(region_names)}")
        self.metadata = metadata
        self.region_names = tuple(region_names)
        self.region_of = region_of
        self.taus = cam_thresholds(cam_curve_interval)
        self.resize_length = resize_length
        regions = len(self.region_names)
        self._prior = np.zeros(regions)
        self._labelled = 0
        self._mass = np.full((len(metadata), regions), np.nan, np.float32)
        self._box = np.zeros((len(self.taus), regions))
        self._box_images = np.zeros(len(self.taus), np.int64)
        self._coverage = Coverage(metadata)

    @classmethod
    def from_region_maps(cls, metadata: Metadata, region_root: str | Path, region_names: Sequence[str] = REGIONS,
                         cam_curve_interval: float = 0.01, resize_length: int = RESIZE_LENGTH) -> RegionEvaluator:
        """Labels from the uint8 region map of each image at :func:`region_map_path`, values
        indexing ``region_names`` (255: ignore), nearest-neighbour resized."""
        root = Path(region_root)

        def region_of(image_id: str) -> np.ndarray:
            path = region_map_path(root, image_id)
            labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if labels is None or labels.ndim != 2 or labels.dtype != np.uint8:
                raise ScoremapError(f"region map of image {image_id!r}: {path} is missing or not a "
                                    "single-channel uint8 image")
            return cv2.resize(labels, (resize_length, resize_length), interpolation=cv2.INTER_NEAREST)

        return cls(metadata, region_names, region_of, cam_curve_interval, resize_length)

    @classmethod
    def from_masks(cls, metadata: Metadata, mask_root: str | Path, cam_curve_interval: float = 0.01,
                   resize_length: int = RESIZE_LENGTH) -> RegionEvaluator:
        """Labels from the GT masks of mask metadata: ``MASK_REGIONS``, the ignore region left out."""
        if metadata.masks is None:
            raise ValueError(f"{metadata.root}: region shares from masks need mask metadata")
        root = Path(mask_root)

        def region_of(image_id: str) -> np.ndarray:
            return ground_truth_mask(root, metadata.masks[image_id], image_id, resize_length)  # type: ignore[index]  # checked above

        return cls(metadata, MASK_REGIONS, region_of, cam_curve_interval, resize_length)

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str], sources: Sequence[str] | None = None) -> None:
        """Add a batch of (B, 224, 224) score maps in [0, 1] and their image ids."""
        check_scoremaps(scoremaps, image_ids, self.resize_length, sources)
        rows = self._coverage.rows(image_ids)
        quantised = quantise(scoremaps)
        boxes = largest_component_boxes(quantised, integer_thresholds(self.taus, quantised))
        for scoremap, image_id, row, image_boxes in zip(scoremaps, image_ids, rows, boxes, strict=False):
            labels = self._labels(image_id)
            counts = np.bincount(labels.ravel(), minlength=IGNORE + 1)[:len(self.region_names)]
            if not counts.sum():
                continue
            self._labelled += 1
            self._prior += counts / counts.sum()
            mass = np.bincount(labels.ravel(), weights=scoremap.ravel(), minlength=IGNORE + 1)[:len(counts)]
            if mass.sum() > 0:
                self._mass[row] = mass / mass.sum()
            self._add_boxes(image_boxes, labels)
        self._coverage.mark(rows)

    def compute(self) -> RegionResult:
        """Mean shares over the split; raises if some image was never accumulated."""
        images = self._coverage.check_complete()
        counted = ~np.isnan(self._mass).any(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return RegionResult(
                images=images,
                region_names=self.region_names,
                thresholds=self.taus,
                prior=self._prior / self._labelled,
                mass=self._mass[counted].astype(np.float64).sum(axis=0) / counted.sum(),
                mass_images=int(counted.sum()),
                mass_per_image=self._mass.copy(),
                box=self._box / self._box_images[:, None],
                box_images=self._box_images.copy(),
            )

    def _labels(self, image_id: str) -> np.ndarray:
        """The image's (224, 224) uint8 labels, checked: region indices or IGNORE."""
        labels = self.region_of(image_id)
        shape = (self.resize_length, self.resize_length)
        if labels.shape != shape or labels.dtype != np.uint8:
            raise ScoremapError(f"region labels of image {image_id!r}: expected {shape} uint8, "
                                f"got {labels.shape} {labels.dtype}")
        bad = (labels >= len(self.region_names)) & (labels != IGNORE)
        if bad.any():
            raise ScoremapError(f"region labels of image {image_id!r}: value {labels[bad][0]} names no region "
                                f"of {self.region_names} (nor {IGNORE}, ignore)")
        return labels

    def _add_boxes(self, boxes: np.ndarray, labels: np.ndarray) -> None:
        """Add the region shares of one image's boxes (K, 4) (-1 rows: none) over its (H, W) labels."""
        integral = np.stack([cv2.integral((labels == r).view(np.uint8))
                             for r in range(len(self.region_names))])  # (R, H + 1, W + 1) pixels above-left
        x0, y0 = np.maximum(boxes[:, 0], 0), np.maximum(boxes[:, 1], 0)
        x1, y1 = boxes[:, 2] + 1, boxes[:, 3] + 1
        areas = (integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]).T  # (K, R)
        totals = areas.sum(axis=1)
        counted = (boxes[:, 0] >= 0) & (totals > 0)
        self._box[counted] += areas[counted] / totals[counted, None]
        self._box_images += counted


@numba.njit(cache=True, nogil=True)
def _largest_by_level(quantised):
    """(LEVELS, 4) int64: row t is the inclusive (x0, y0, x1, y1) extent of the largest 8-connected
    component of {quantised > t} (ties: the one whose first pixel in raster order comes first), -1
    when that set is empty. One union-find sweep adding pixels by decreasing value; only the
    component a pixel joins changes, and only grows, so a running best is kept."""
    height, width = quantised.shape
    wp = width + 2
    order, start = _pixels_by_value(quantised)  # indices into the map padded by one pixel
    parent = np.full((height + 2) * wp, -1, np.int32)  # -1: not on
    size = np.zeros_like(parent)
    first = np.zeros_like(parent)  # a root's smallest (raster-first) pixel index
    box = np.zeros((len(parent), 4), np.int32)  # x0, y0, x1, y1 in padded coordinates, at roots
    around = np.array([-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1], np.int64)  # the 8 neighbours
    out = np.full((LEVELS, 4), -1, np.int64)
    best = -1
    for level in range(LEVELS - 1, 0, -1):
        for k in range(start[level], start[level + 1]):
            p = order[k]
            parent[p], size[p], first[p] = p, 1, p
            box[p, 0], box[p, 1], box[p, 2], box[p, 3] = p % wp, p // wp, p % wp, p // wp
            r = p
            for j in range(8):
                q = p + around[j]
                if parent[q] < 0:
                    continue
                rq = _find(parent, q)
                if rq == r:
                    continue
                if size[rq] > size[r]:  # union by size
                    r, rq = rq, r
                parent[rq] = r
                size[r] += size[rq]
                first[r] = min(first[r], first[rq])
                for c in range(2):
                    box[r, c] = min(box[r, c], box[rq, c])
                    box[r, c + 2] = max(box[r, c + 2], box[rq, c + 2])
            if best >= 0:
                best = _find(parent, best)
            if best < 0 or size[r] > size[best] or (size[r] == size[best] and first[r] < first[best]):
                best = r
        if best >= 0:  # the on-set is now {quantised > level - 1}
            for c in range(4):
                out[level - 1, c] = box[best, c] - 1
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _batch_largest_by_level(quantised):
    out = np.empty((quantised.shape[0], LEVELS, 4), np.int64)
    for b in numba.prange(quantised.shape[0]):
        out[b] = _largest_by_level(quantised[b])
    return out


def largest_component_boxes(quantised: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Box of the largest 8-connected component of each map above each of its cuts.

    quantised: (B, H, W) uint8; cuts: (B, K) int64 (on = value > cut). Returns (B, K, 4) int64
    inclusive (x0, y0, x1, y1), -1 rows where no pixel is on.
    """
    by_level = _batch_largest_by_level(np.ascontiguousarray(quantised))
    return by_level[np.arange(len(quantised))[:, None], cuts]


def bootstrap_ci(shares: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """(R, 2) percentile bootstrap interval of the column means of per-image shares (N, R), rows
    with NaN left out (e.g. ``mass_per_image``): each resample draws as many rows with replacement,
    as multinomial counts from ``np.random.default_rng(seed)``. Memory: the (resamples, N) counts."""
    shares = shares[~np.isnan(shares).any(axis=1)].astype(np.float64)
    if not len(shares):
        raise ValueError("no row without NaN to resample")
    n = len(shares)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return np.quantile(counts @ shares / n, [(1 - level) / 2, (1 + level) / 2], axis=0).T
