"""Boxes of a thresholded score map's contours, at every threshold at once.

The reference evaluator thresholds the uint8 map at each tau, runs ``cv2.findContours(RETR_TREE)``
and takes ``cv2.boundingRect`` of every contour: ``(x, y, x + w, y + h)`` with x1, y1 clipped to
W - 1, H - 1. RETR_TREE returns two kinds of contour, and each has a box that needs no tracing:

* the outer border of every 8-connected component of on-pixels: its box is the component's
  pixel extent ``(x0, y0, x1 + 1, y1 + 1)``;
* the hole border of every 4-connected component of off-pixels that does not reach the image
  frame (a hole): the border runs through the on-pixels 4-adjacent to the hole, so its box is
  the hole's extent grown by one, ``(x0 - 1, y0 - 1, x1 + 2, y1 + 2)``.

(``tests/test_contour_boxes.py`` checks both against OpenCV on random masks.) As the threshold
falls, on-components only merge and grow, and as it rises, off-components only merge and grow.
So one union-find sweep over the pixels in decreasing value (8-connectivity) and one in
increasing value (4-connectivity, with a flag for reaching the frame) give every component's box
at every uint8 level, in O(pixels) per map instead of one contour search per threshold.

Only whether *some* box reaches each IoU criterion matters, so each sweep keeps, per criterion,
the number of live components whose box does; a component's IoU is recomputed only at the
levels that are evaluated and only when it changed since. A pixel whose set neighbours form one
connected group (a 256-entry table over the ring of 8 around it) joins their component with a
single find; only a pixel between two or more groups looks up each neighbour's root and merges.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from pipeline.metrics.conventions import best_iou

LEVELS = 256  # uint8 values


RING = ((0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1))  # N, NE, E, SE, S, SW, W, NW


def _ring_groups(diagonal: bool) -> np.ndarray:
    """For each 8-bit mask of set pixels in RING, how many groups of set ring pixels, connected among
    themselves (8-connectivity if ``diagonal``, else 4), contain a neighbour of the centre pixel
    (every ring pixel with 8-connectivity; N, E, S, W with 4). Set pixels adjacent to each other were
    joined when the later of them was added, so each group is already within one component: a pixel
    that joins one group needs no merge."""
    counts = np.zeros(256, np.int64)
    for mask in range(256):
        on = [i for i in range(8) if (mask >> i) & 1]
        group = {i: i for i in on}
        for a in on:
            for b in on:
                dx, dy = abs(RING[a][0] - RING[b][0]), abs(RING[a][1] - RING[b][1])
                if max(dx, dy) == 1 and (diagonal or dx + dy == 1):
                    old, new = group[b], group[a]
                    group = {i: new if g == old else g for i, g in group.items()}
        counts[mask] = len({group[i] for i in on if diagonal or i % 2 == 0})
    return counts


OUTER_GROUPS = _ring_groups(diagonal=True)  # 8-connectivity: every ring pixel is a neighbour
HOLE_GROUPS = _ring_groups(diagonal=False)  # 4-connectivity: N, E, S, W; the diagonals only link them


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent, i):
    while parent[i] != i:  # path halving
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True, nogil=True)
def _pixels_by_value(quantised):
    """Counting sort of a (H, W) uint8 map's pixels by value, as indices into the map padded by one
    pixel on every side: the pixels of value v are order[start[v]:start[v + 1]], in raster order."""
    height, width = quantised.shape
    start = np.zeros(LEVELS + 1, np.int64)
    for y in range(height):
        for x in range(width):
            start[quantised[y, x] + 1] += 1
    for v in range(LEVELS):
        start[v + 1] += start[v]
    fill = start[:LEVELS].copy()
    order = np.empty(height * width, np.int32)
    for y in range(height):
        for x in range(width):
            v = quantised[y, x]
            order[fill[v]] = (y + 1) * (width + 2) + x + 1
            fill[v] += 1
    return order, start


@numba.njit(cache=True, nogil=True)
def _sweep(order, start, height, width, holes, needed, gt, iou_thresholds, hits):
    """One union-find sweep over a map's pixels, ORing into hits (LEVELS, D).

    holes=False: levels 255 -> 1 add the pixels of that value to the on-set; afterwards it is
    {value > level - 1}, so threshold t = level - 1 is scored on its 8-connected components.
    holes=True: levels 0 -> 255 add the pixels of that value to the off-set {value <= t}, t = level,
    scored on its 4-connected components that do not reach the frame.
    Work arrays live on the grid padded by one pixel (no bounds checks); in the hole sweep the
    padding ring is off at every level and starts as one component, the frame.
    """
    ring_groups = HOLE_GROUPS if holes else OUTER_GROUPS
    wp = width + 2
    n = (height + 2) * wp
    n_crit = iou_thresholds.shape[0]
    parent = np.full(n, -1, np.int32)  # -1: pixel not in the set yet
    size = np.empty(n, np.int32)
    box = np.empty((n, 4), np.int32)  # x0, y0, x1, y1 in padded coordinates, valid at roots
    iou = np.empty(n, np.float64)  # a root's best IoU, counted in n_reaching; < 0: not counted
    touched = np.empty(n, np.int32)  # roots changed since the last scored level
    is_touched = np.zeros(n, np.bool_)
    n_touched = 0
    n_reaching = np.zeros(n_crit, np.int64)  # live components whose box reaches each criterion
    n_active = 0
    # neighbour offsets for the slow path: the 4-neighbours first, then the diagonals
    around = np.array([-wp, -1, 1, wp, -wp - 1, -wp + 1, wp - 1, wp + 1], np.int64)
    n_around = 4 if holes else 8
    frame = -1
    if holes:
        frame = 0
        for x in range(wp):
            parent[x] = 0
            parent[n - wp + x] = 0
        for y in range(height + 2):
            parent[y * wp] = 0
            parent[y * wp + wp - 1] = 0
        size[0] = n
        iou[0] = -1.0

    t_min, t_max = LEVELS, -1  # scored thresholds lie in [t_min, t_max]
    for t in range(LEVELS):
        if needed[t]:
            t_min, t_max = min(t_min, t), max(t_max, t)
    if t_max < 0:
        return
    if holes:
        level, last, step = 0, t_max, 1
    else:
        level, last, step = LEVELS - 1, t_min + 1, -1

    while True:
        for k in range(start[level], start[level + 1]):
            p = order[k]
            y = p // wp
            x = p - y * wp
            n_active += 1
            # The neighbours' parents, loaded at once.
            v0 = parent[p - wp - 1]
            v1 = parent[p - wp]
            v2 = parent[p - wp + 1]
            v3 = parent[p - 1]
            v4 = parent[p + 1]
            v5 = parent[p + wp - 1]
            v6 = parent[p + wp]
            v7 = parent[p + wp + 1]
            # Which of the 8 around p are in the set, as a RING mask; only if p joins two or more
            # groups of them (see _ring_groups) may components need merging.
            ring = (np.int64(v1 >= 0) | (np.int64(v2 >= 0) << 1) | (np.int64(v4 >= 0) << 2)
                    | (np.int64(v7 >= 0) << 3) | (np.int64(v6 >= 0) << 4) | (np.int64(v5 >= 0) << 5)
                    | (np.int64(v3 >= 0) << 6) | (np.int64(v0 >= 0) << 7))
            groups = ring_groups[ring]
            if holes:
                largest = max(max(v1, v3), max(v4, v6))
            else:
                largest = max(max(max(v0, v1), max(v2, v3)), max(max(v4, v5), max(v6, v7)))
            if groups == 0:  # no neighbour in the set: a new component
                r = p
                parent[p] = p
                size[p] = 1
                box[p, 0] = x
                box[p, 1] = y
                box[p, 2] = x
                box[p, 3] = y
                iou[p] = -1.0
            else:  # join one neighbour's component; look further only if p joins several groups
                r = _find(parent, largest)
                parent[p] = r
                size[r] += 1
                box[r, 0] = min(box[r, 0], x)
                box[r, 1] = min(box[r, 1], y)
                box[r, 2] = max(box[r, 2], x)
                box[r, 3] = max(box[r, 3], y)
                if groups > 1:
                    for j in range(n_around):
                        q = p + around[j]
                        if parent[q] < 0:
                            continue
                        rq = _find(parent, parent[q])
                        if rq != r:
                            if size[rq] > size[r]:  # union by size: the larger tree's root survives
                                r, rq = rq, r
                            parent[rq] = r
                            size[r] += size[rq]
                            if rq == frame:
                                frame = r
                            box[r, 0] = min(box[r, 0], box[rq, 0])
                            box[r, 1] = min(box[r, 1], box[rq, 1])
                            box[r, 2] = max(box[r, 2], box[rq, 2])
                            box[r, 3] = max(box[r, 3], box[rq, 3])
                            if iou[rq] >= 0:  # the absorbed component is gone
                                for d in range(n_crit):
                                    if iou[rq] >= iou_thresholds[d]:
                                        n_reaching[d] -= 1
                    # Point the pixel and its neighbours straight at the root: the next pixel
                    # beside them then takes the fast path.
                    parent[p] = r
                    for j in range(n_around):
                        q = p + around[j]
                        if parent[q] >= 0:
                            parent[q] = r
            if not is_touched[r]:
                is_touched[r] = True
                touched[n_touched] = r
                n_touched += 1

        t = level if holes else level - 1
        if 0 <= t < LEVELS and needed[t]:
            for k in range(n_touched):
                r = touched[k]
                is_touched[r] = False
                if parent[r] != r:  # absorbed since it was touched: already uncounted
                    continue
                if iou[r] >= 0:
                    for d in range(n_crit):
                        if iou[r] >= iou_thresholds[d]:
                            n_reaching[d] -= 1
                    iou[r] = -1.0
                if r == frame:  # reaches the frame: background, not a hole
                    continue
                # Padded -> image coordinates: x - 1. Outer border: (x0, y0, x1 + 1, y1 + 1);
                # hole border: (x0 - 1, y0 - 1, x1 + 2, y1 + 2); x1, y1 clipped to W - 1, H - 1.
                grow = 1 if holes else 0
                iou[r] = best_iou(box[r, 0] - 1 - grow, box[r, 1] - 1 - grow,
                                  min(box[r, 2] + grow, width - 1), min(box[r, 3] + grow, height - 1), gt)
                for d in range(n_crit):
                    if iou[r] >= iou_thresholds[d]:
                        n_reaching[d] += 1
            n_touched = 0
            if not holes and n_active == 0:
                # No contour at all: the reference scores the box (0, 0, 0, 0).
                empty = best_iou(0, 0, 0, 0, gt)
                for d in range(n_crit):
                    hits[t, d] = hits[t, d] or empty >= iou_thresholds[d]
            for d in range(n_crit):
                hits[t, d] = hits[t, d] or n_reaching[d] > 0
        if level == last:
            break
        level += step


@numba.njit(cache=True, nogil=True)
def _map_hits(quantised, needed, gt, iou_thresholds, hits):
    """hits (LEVELS, D) of one uint8 map (H, W): at threshold t, does any contour box reach
    IoU >= iou_thresholds[d] with some GT box? Only levels with needed[t] are filled."""
    height, width = quantised.shape
    order, start = _pixels_by_value(quantised)
    _sweep(order, start, height, width, False, needed, gt, iou_thresholds, hits)
    _sweep(order, start, height, width, True, needed, gt, iou_thresholds, hits)


@numba.njit(cache=True, nogil=True, parallel=True)
def _batch_hits(quantised, needed, gt, gt_start, gt_stop, iou_thresholds):
    hits = np.zeros((quantised.shape[0], LEVELS, iou_thresholds.shape[0]), np.bool_)
    for b in numba.prange(quantised.shape[0]):
        _map_hits(quantised[b], needed[b], gt[gt_start[b]:gt_stop[b]], iou_thresholds, hits[b])
    return hits


def multi_contour_hits(quantised: np.ndarray, thresholds: np.ndarray, gt: np.ndarray, gt_start: np.ndarray,
                       gt_stop: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """Multi-contour correctness of a batch, at each map's thresholds.

    quantised: (B, H, W) uint8 maps; thresholds: (B, K) int64 cuts (on = value > cut);
    gt: (G, 4) int64 boxes, map b owning rows gt_start[b]:gt_stop[b]; iou_thresholds: (D,) float64
    fractions. Returns (B, K, D) bool: some contour box has IoU >= iou_thresholds[d] with some GT box.
    """
    batch = np.arange(len(quantised))
    needed = np.zeros((len(quantised), LEVELS), np.bool_)
    needed[batch[:, None], thresholds] = True
    hits = _batch_hits(np.ascontiguousarray(quantised), needed, gt, gt_start, gt_stop, iou_thresholds)
    return hits[batch[:, None], thresholds]


def largest_contour_box(quantised: np.ndarray, cut: int) -> tuple[int, int, int, int]:
    """Box of the single largest contour at one cut, the old MaxBoxAcc: the contour with the largest
    ``cv2.contourArea`` among all RETR_TREE contours (the first one on ties, as Python's ``max``);
    (0, 0, 0, 0) when there is none. quantised: (H, W) uint8.
    """
    height, width = quantised.shape
    contours = cv2.findContours((quantised > cut).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return 0, 0, 0, 0
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return x, y, min(x + w, width - 1), min(y + h, height - 1)


def single_contour_hits(quantised: np.ndarray, thresholds: np.ndarray, gt: np.ndarray,
                        iou_thresholds: np.ndarray) -> np.ndarray:
    """Single-contour correctness of one map (H, W) at its cuts (K,): (K, D) bool."""
    ious = {cut: best_iou(*largest_contour_box(quantised, int(cut)), gt) for cut in np.unique(thresholds)}
    return np.array([ious[cut] for cut in thresholds])[:, None] >= iou_thresholds[None, :]
