"""How well a map at feature resolution tells the object from the background: its object AUC.

A diagnostic, not a protocol metric: it scores the attention maps of a method's taps (and the channel
mean of the same features) on train-fullsup during training, threshold-free and at the map's own
resolution, so that a map that follows the object scores near 1, a flat or position-scrambled one
0.5, and one that lights the background below 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.metadata import Box


def cells_in_boxes(boxes: Sequence[Box], image_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the cells of an h x w grid laid over the whole image whose centres lie in some box.

    boxes: (x0, y0, x1, y1) in original pixels; image_size: (width, height) of the original image. The
    centre of cell (r, c) is at ((c + 0.5) width / w, (r + 0.5) height / h), edges of a box inclusive."""
    (width, height), (h, w) = image_size, grid
    x = (np.arange(w) + 0.5) * width / w
    y = (np.arange(h) + 0.5) * height / h
    inside = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((y >= y0) & (y <= y1))[:, None] & ((x >= x0) & (x <= x1))[None, :]
    return inside


def object_auc(scores: np.ndarray, inside: np.ndarray) -> float | None:
    """The probability that a cell inside the object scores above one outside it, ties counting
    half (the Mann-Whitney U statistic over n_in * n_out); None when either side has no cell.

    scores, inside: arrays of the same shape (the map, the object's cells)."""
    scores, inside = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(inside, dtype=bool).ravel()
    n_in = int(inside.sum())
    n_out = inside.size - n_in
    if n_in == 0 or n_out == 0:
        return None
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[group]  # 1-based, ties at their average rank
    return float((ranks[inside].sum() - n_in * (n_in + 1) / 2.0) / (n_in * n_out))
