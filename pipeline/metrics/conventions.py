"""The conventions of the *Evaluating WSOL Right* reference evaluator (clovaai/wsolevaluation).

They are part of the metric's definition: each function names the convention it reproduces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from pipeline.errors import PipelineError

RESIZE_LENGTH = 224  # score maps and rescaled GT boxes live on a 224x224 grid


class ScoremapError(PipelineError, ValueError):
    """An invalid score map; the message names the image id (and file, when known)."""


def cam_thresholds(interval: float) -> np.ndarray:
    """Score-map thresholds tau: ``np.arange(0, 1, interval)`` (float64), as the reference."""
    if not 0 < interval < 1:
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def quantise(scoremaps: np.ndarray) -> np.ndarray:
    """Score maps in [0, 1] -> uint8 by ``(s * 255).astype(uint8)`` (truncation), in float64.

    float32 maps are widened to float64 first, exactly as if they had been saved as float64.
    """
    scoremaps = np.ascontiguousarray(scoremaps)
    if scoremaps.dtype not in (np.float32, np.float64):
        scoremaps = scoremaps.astype(np.float64)
    return _quantise(scoremaps.reshape(-1)).reshape(scoremaps.shape)


@numba.njit(cache=True, nogil=True, parallel=True)
def _quantise(values):
    """(N,) float32/float64 in [0, 1] -> (N,) uint8, as ``(float64(s) * 255).astype(uint8)``."""
    out = np.empty(values.shape[0], np.uint8)
    for i in numba.prange(values.shape[0]):
        out[i] = np.uint8(np.float64(values[i]) * 255.0)
    return out


def integer_thresholds(taus: np.ndarray, quantised: np.ndarray) -> np.ndarray:
    """Per map and tau, the uint8 cut ``int(tau * max(uint8 map))``; a pixel is on when its
    value is *strictly greater* than the cut (``cv2.threshold(..., THRESH_BINARY)``).

    quantised: (B, H, W) uint8 -> (B, K) int64, K = len(taus).
    """
    peak = quantised.reshape(len(quantised), -1).max(axis=1)
    return (taus[None, :] * peak[:, None]).astype(np.int64)


def rescale_boxes(boxes: Sequence[Sequence[int]], image_size: tuple[int, int],
                  length: int = RESIZE_LENGTH) -> np.ndarray:
    """GT boxes from original pixels to the length x length grid: ``int(x * length / width)``,
    multiplied first, then divided, then truncated (the reference's ``resize_bbox``).

    boxes: (G, 4) x0, y0, x1, y1 -> (G, 4) int64.
    """
    width, height = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    return (np.asarray(boxes, dtype=np.float64) * float(length) / scale).astype(np.int64)


def check_scoremaps(scoremaps: np.ndarray, image_ids: Sequence[str], length: int = RESIZE_LENGTH,
                    sources: Sequence[str] | None = None) -> None:
    """Raise :class:`ScoremapError` unless every map is a finite (length, length) array in [0, 1].

    scoremaps: (B, length, length) float.
    """
    def where(i: int) -> str:
        source = f" ({sources[i]})" if sources is not None else ""
        return f"score map of image {image_ids[i]!r}{source}"

    scoremaps = np.asarray(scoremaps)
    if scoremaps.ndim != 3 or scoremaps.shape[1:] != (length, length):
        raise ScoremapError(
            f"expected a batch of ({length}, {length}) score maps, got an array of shape {scoremaps.shape}"
        )
    if len(scoremaps) != len(image_ids):
        raise ScoremapError(f"{len(scoremaps)} score maps for {len(image_ids)} image ids")
    if not np.issubdtype(scoremaps.dtype, np.floating):
        raise ScoremapError(f"score maps must be floating point in [0, 1], got dtype {scoremaps.dtype}")
    flat = scoremaps.reshape(len(scoremaps), -1)
    for i in np.flatnonzero(np.isnan(flat).any(axis=1)):
        raise ScoremapError(f"{where(i)}: contains NaN")
    low, high = flat.min(axis=1), flat.max(axis=1)
    for i in np.flatnonzero((low < 0) | (high > 1)):
        raise ScoremapError(f"{where(i)}: values must lie in [0, 1], found min {low[i]}, max {high[i]}")


def check_scoremap_shape(scoremap: np.ndarray, image_id: str, source: str, length: int = RESIZE_LENGTH) -> None:
    """One map as loaded from a file must be 2-D (length, length)."""
    if scoremap.ndim != 2 or scoremap.shape != (length, length):
        raise ScoremapError(
            f"score map of image {image_id!r} ({source}): expected a 2-D ({length}, {length}) array, "
            f"got shape {scoremap.shape}"
        )


@numba.njit(cache=True, nogil=True)
def box_iou(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1) -> float:
    """IoU of two boxes with the inclusive ``+1`` pixel convention; 0 when the union is empty."""
    inter = max(0, min(ax1, bx1) - max(ax0, bx0) + 1) * max(0, min(ay1, by1) - max(ay0, by0) + 1)
    union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
    if union <= 0:
        return 0.0
    return inter / union


@numba.njit(cache=True, nogil=True)
def best_iou(x0, y0, x1, y1, gt) -> float:
    """Largest IoU between one box and any GT box; gt: (G, 4) int64."""
    best = 0.0
    for g in range(gt.shape[0]):
        best = max(best, box_iou(x0, y0, x1, y1, gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3]))
    return best
