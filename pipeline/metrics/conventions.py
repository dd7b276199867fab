"""The conventions of the *Evaluating WSOL Right* reference evaluator (clovaai/wsolevaluation).

They are part of the metric's definition: each function names the convention it reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from pipeline.errors import PipelineError

RESIZE_LENGTH = 224  # score maps and rescaled GT boxes live on a 224x224 grid
MAXBOXACC_V2_IOUS = (30, 50, 70)  # MaxBoxAccV2 averages MaxBoxAcc over these IoU criteria (%)
GT_KNOWN_IOU = 50  # the IoU criterion (%) of GT-known and top-1 localization, and of the old MaxBoxAcc
# The CAM threshold a run records (and wsol localize cuts at) when no box-annotated val split chose one
FALLBACK_CAM_THRESHOLD = 0.5


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
    return _scan(scoremaps)[0]


@numba.njit(cache=True, nogil=True)
def _scan_values(values, out):
    """(N,) float32/float64 -> out (N,) uint8 as ``(float64(s) * 255).astype(uint8)`` (values outside
    [0, 1] give unspecified bytes), in one pass that also returns whether some value is NaN, and
    the smallest and largest value."""
    nan = False
    low, high = np.inf, -np.inf
    for i in range(values.shape[0]):
        value = np.float64(values[i])
        nan |= value != value
        low = min(low, value)
        high = max(high, value)
        out[i] = np.uint8(value * 255.0)
    return nan, low, high


@numba.njit(cache=True, nogil=True, parallel=True)
def _scan_rows(values, out):
    """_scan_values of each row of (B, N) values into out (B, N): (B,) NaN flags, minima, maxima."""
    nan = np.empty(values.shape[0], np.bool_)
    low = np.empty(values.shape[0], np.float64)
    high = np.empty(values.shape[0], np.float64)
    for b in numba.prange(values.shape[0]):
        nan[b], low[b], high[b] = _scan_values(values[b], out[b])
    return nan, low, high


def _scan(scoremaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maps (B, ...) -> quantised (B, ...) uint8, and per map (B,) NaN flags, minima and maxima (in
    the maps' own float dtype, as numpy's min and max would give them). Parallel over the maps on
    numba's threads: call it from one thread at a time."""
    scoremaps = np.asarray(scoremaps)
    values = np.ascontiguousarray(_floats(scoremaps))
    rows = values.reshape(len(values), math.prod(values.shape[1:])) if values.ndim > 1 else values.reshape(1, -1)
    out = np.empty(rows.shape, np.uint8)
    nan, low, high = _scan_rows(rows, out)
    dtype = scoremaps.dtype if np.issubdtype(scoremaps.dtype, np.floating) else np.float64
    return out.reshape(scoremaps.shape), nan, low.astype(dtype), high.astype(dtype)


def _floats(scoremaps: np.ndarray) -> np.ndarray:
    """float32 and float64 maps as they are, any other dtype as float64."""
    return scoremaps if scoremaps.dtype in (np.float32, np.float64) else scoremaps.astype(np.float64)


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


def _raise_on_values(where: str, nan: bool, low: float, high: float) -> None:
    if nan:
        raise ScoremapError(f"{where}: contains NaN")
    if low < 0 or high > 1:
        raise ScoremapError(f"{where}: values must lie in [0, 1], found min {low}, max {high}")


def check_scoremaps(scoremaps: np.ndarray, image_ids: Sequence[str], length: int = RESIZE_LENGTH,
                    sources: Sequence[str] | None = None) -> np.ndarray:
    """Raise :class:`ScoremapError` unless every map is a finite (length, length) array in [0, 1];
    return the maps quantised (:func:`quantise`), from the same pass over the values.

    scoremaps: (B, length, length) float -> (B, length, length) uint8. NaN is reported before values
    out of range, each for the first such map.
    """
    scoremaps = np.asarray(scoremaps)
    if scoremaps.ndim != 3 or scoremaps.shape[1:] != (length, length):
        raise ScoremapError(
            f"expected a batch of ({length}, {length}) score maps, got an array of shape {scoremaps.shape}"
        )
    if len(scoremaps) != len(image_ids):
        raise ScoremapError(f"{len(scoremaps)} score maps for {len(image_ids)} image ids")
    if not np.issubdtype(scoremaps.dtype, np.floating):
        raise ScoremapError(f"score maps must be floating point in [0, 1], got dtype {scoremaps.dtype}")
    quantised, nan, low, high = _scan(scoremaps)
    bad = np.flatnonzero(nan) if nan.any() else np.flatnonzero((low < 0) | (high > 1))
    if len(bad):
        i = bad[0]
        source = f" ({sources[i]})" if sources is not None else ""
        _raise_on_values(f"score map of image {image_ids[i]!r}{source}", nan[i], low[i], high[i])
    return quantised


def check_scoremap(scoremap: np.ndarray, image_id: str, source: str, length: int = RESIZE_LENGTH) -> np.ndarray:
    """One map as loaded from a file (``source``): raise :class:`ScoremapError` unless it is a finite
    2-D (length, length) float array in [0, 1]; return it quantised, (length, length) uint8. Runs in
    the calling thread (numba without the GIL), so several threads may check maps at once."""
    where = f"score map of image {image_id!r} ({source})"
    if scoremap.ndim != 2 or scoremap.shape != (length, length):
        raise ScoremapError(f"{where}: expected a 2-D ({length}, {length}) array, got shape {scoremap.shape}")
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise ScoremapError(f"{where}: expected floating point values in [0, 1], got dtype {scoremap.dtype}")
    out = np.empty(scoremap.shape, np.uint8)
    nan, low, high = _scan_values(np.ascontiguousarray(_floats(scoremap)).reshape(-1), out.reshape(-1))
    _raise_on_values(where, nan, scoremap.dtype.type(low), scoremap.dtype.type(high))
    return out


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
