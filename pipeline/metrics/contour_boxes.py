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

Only whether *some* box reaches each IoU criterion matters, so each sweep keeps the number of live
components whose box reaches each number of criteria (they are sorted: reaching one reaches every
lower one); a component's IoU is recomputed only at the levels that are evaluated, only when it
changed since, and only when its area leaves IoU >= the lowest criterion possible. Pixels carry
component ids, and the union-find runs over a table of the components (created in order, so the
live ones are few and close in memory); each pixel also keeps which of the pixels above, at and
below it are set, so the 3x3 neighbourhood of a new pixel is three loads. A pixel whose set
neighbours form one connected group (a 512-entry table over the neighbourhood) joins their
component with a single find; only a pixel between two or more groups looks up each neighbour's
component and merges. Indices are unsigned, which spares numba's negative-index wraparound.
"""

from __future__ import annotations

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

# The 3x3 neighbourhood of a pixel as 9 bits: bit 3 * (dx + 1) + (dy + 1) is the pixel at (x + dx, y + dy),
# i.e. bits 0-2 the column to the west (NW, W, SW), 3-5 its own (N, itself, S), 6-8 the east (NE, E, SE).
NEIGHBOURHOOD = tuple((bit // 3 - 1, bit % 3 - 1) for bit in range(9))  # (dx, dy)


def _neighbourhood_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per 9-bit neighbourhood (the centre bit ignored): the RING groups of 8- and of 4-connectivity
    (as OUTER_GROUPS, HOLE_GROUPS), and the bit of its first set 8-neighbour and 4-neighbour."""
    ring = np.zeros(512, np.int64)
    first8 = np.zeros(512, np.int64)
    first4 = np.zeros(512, np.int64)
    for mask in range(512):
        set_bits = [bit for bit in range(9) if (mask >> bit) & 1 and bit != 4]
        for bit in set_bits:
            ring[mask] |= 1 << RING.index(NEIGHBOURHOOD[bit])
        first8[mask] = next(iter(set_bits), 0)
        first4[mask] = next((bit for bit in set_bits if 0 in NEIGHBOURHOOD[bit]), 0)
    return OUTER_GROUPS[ring], HOLE_GROUPS[ring], first8, first4


OUTER_GROUPS9, HOLE_GROUPS9, FIRST8, FIRST4 = _neighbourhood_tables()


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
    """One union-find sweep over a map's pixels, ORing into hits (LEVELS, D); iou_thresholds (D,)
    ascending.

    holes=False: levels 255 -> 1 add the pixels of that value to the on-set; afterwards it is
    {value > level - 1}, so threshold t = level - 1 is scored on its 8-connected components.
    holes=True: levels 0 -> 255 add the pixels of that value to the off-set {value <= t}, t = level,
    scored on its 4-connected components that do not reach the frame.
    Pixel arrays live on the grid padded by one pixel (no bounds checks); in the hole sweep the
    padding ring is off at every level and is component 0, the frame, which every merge keeps (the
    older component survives a merge).
    """
    groups_of = HOLE_GROUPS9 if holes else OUTER_GROUPS9
    first_of = FIRST4 if holes else FIRST8
    wp = width + 2
    n = (height + 2) * wp
    n_crit = iou_thresholds.shape[0]
    label = np.full(n, -1, np.int32)  # a set pixel's component, or one merged into another since; -1: not set
    column = np.zeros(n, np.uint8)  # bit 0: the pixel above is set; 1: this one; 2: the one below
    # Per component (ids in order of creation; valid at roots): parent, box x0, y0, x1, y1 in padded
    # coordinates, how many criteria its box reaches as counted in n_reaching, changed since scored.
    parent = np.empty(n, np.uint32)
    box = np.empty((n, 4), np.int32)
    reach = np.empty(n, np.int64)
    is_touched = np.empty(n, np.bool_)
    touched = np.empty(n, np.uint32)
    n_touched = 0
    n_comp = 0
    n_reaching = np.zeros(n_crit + 1, np.int64)  # [k >= 1]: live components whose box reaches exactly k criteria
    n_active = 0
    one, three, six = np.uint64(1), np.uint64(3), np.uint64(6)
    offsets = np.empty(9, np.uint64)  # NEIGHBOURHOOD bits as index offsets (unsigned: -1 wraps around)
    for bit in range(9):
        offsets[bit] = np.uint64((bit % 3 - 1) * wp + bit // 3 - 1)
    north, south = offsets[3], offsets[5]
    around = offsets[np.array([3, 1, 7, 5, 0, 2, 6, 8])]  # N, W, E, S, then the diagonals
    n_around = 4 if holes else 8
    inv_wp = 1.0 / wp  # y = int(p * inv_wp): exact, as p / wp is at least 1 / wp from an integer
    if holes:
        # The padding ring: the top and bottom rows, the left and right columns.
        for p in np.concatenate((np.arange(wp), np.arange(n - wp, n), np.arange(wp, n - wp, wp),
                                 np.arange(2 * wp - 1, n - wp, wp))):
            label[p] = 0
            column[p] |= 2
            if p >= wp:
                column[p - wp] |= 4
            if p < n - wp:
                column[p + wp] |= 1
        parent[0] = 0
        reach[0] = 0
        is_touched[0] = False
        n_comp = 1
    # A box of area a can reach IoU >= iou_thresholds[0] with GT box g only if low[g] <= a <= high[g]
    # (IoU <= min(a, area) / max(a, area)); the bounds are widened by a relative 1e-9.
    low = np.empty(gt.shape[0], np.float64)
    high = np.empty(gt.shape[0], np.float64)
    for g in range(gt.shape[0]):
        area = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)
        low[g] = area * iou_thresholds[0] * (1 - 1e-9)
        high[g] = area / (iou_thresholds[0] * (1 - 1e-9)) if iou_thresholds[0] > 0 else np.inf

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
            p = np.uint64(order[k])
            y = np.int64(order[k] * inv_wp)
            x = np.int64(order[k]) - y * wp
            n_active += 1
            around_p = (np.uint64(column[p - one]) | (np.uint64(column[p]) << three)
                        | (np.uint64(column[p + one]) << six))
            column[p + north] |= 4  # p is the pixel below the one above it
            column[p] |= 2
            column[p + south] |= 1
            groups = groups_of[around_p]
            if groups == 0:  # no neighbour in the set: a new component
                r = np.uint32(n_comp)
                n_comp += 1
                parent[r] = r
                box[r, 0] = x
                box[r, 1] = y
                box[r, 2] = x
                box[r, 3] = y
                reach[r] = 0
                is_touched[r] = False
            else:  # join one neighbour's component; look further only if p joins several groups
                r = _find(parent, np.uint32(label[p + offsets[first_of[around_p]]]))
                box[r, 0] = min(box[r, 0], x)
                box[r, 1] = min(box[r, 1], y)
                box[r, 2] = max(box[r, 2], x)
                box[r, 3] = max(box[r, 3], y)
                if groups > 1:
                    for j in range(n_around):
                        lq = label[p + around[j]]
                        if lq < 0:
                            continue
                        rq = _find(parent, np.uint32(lq))
                        if rq != r:
                            if rq < r:  # the older component survives: the frame stays 0
                                r, rq = rq, r
                            parent[rq] = r
                            box[r, 0] = min(box[r, 0], box[rq, 0])
                            box[r, 1] = min(box[r, 1], box[rq, 1])
                            box[r, 2] = max(box[r, 2], box[rq, 2])
                            box[r, 3] = max(box[r, 3], box[rq, 3])
                            if reach[rq] > 0:  # the absorbed component is gone
                                n_reaching[reach[rq]] -= 1
                    # Point the neighbours straight at the component: the next pixel beside them
                    # then takes the fast path.
                    for j in range(n_around):
                        q = p + around[j]
                        if label[q] >= 0:
                            label[q] = r
            label[p] = r
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
                if reach[r] > 0:
                    n_reaching[reach[r]] -= 1
                    reach[r] = 0
                if holes and r == 0:  # the frame: background, not a hole
                    continue
                # Padded -> image coordinates: x - 1. Outer border: (x0, y0, x1 + 1, y1 + 1);
                # hole border: (x0 - 1, y0 - 1, x1 + 2, y1 + 2); x1, y1 clipped to W - 1, H - 1.
                grow = 1 if holes else 0
                x0, y0 = box[r, 0] - 1 - grow, box[r, 1] - 1 - grow
                x1, y1 = min(box[r, 2] + grow, width - 1), min(box[r, 3] + grow, height - 1)
                area = (x1 - x0 + 1) * (y1 - y0 + 1)
                possible = False
                for g in range(gt.shape[0]):
                    possible = possible or low[g] <= area <= high[g]
                if not possible:
                    continue
                iou = best_iou(x0, y0, x1, y1, gt)
                reached = 0
                while reached < n_crit and iou >= iou_thresholds[reached]:
                    reached += 1
                if reached > 0:
                    reach[r] = reached
                    n_reaching[reached] += 1
            n_touched = 0
            reached = n_crit  # the most criteria any live component reaches
            while reached > 0 and n_reaching[reached] == 0:
                reached -= 1
            if not holes and n_active == 0:
                # No contour at all: the reference scores the box (0, 0, 0, 0).
                empty = best_iou(0, 0, 0, 0, gt)
                while reached < n_crit and empty >= iou_thresholds[reached]:
                    reached += 1
            for d in range(reached):
                hits[t, d] = True
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
    ascending = np.argsort(iou_thresholds, kind="stable")
    hits = _batch_hits(np.ascontiguousarray(quantised), needed, gt, gt_start, gt_stop,
                       np.ascontiguousarray(iou_thresholds[ascending], np.float64))
    return hits[batch[:, None], thresholds][..., np.argsort(ascending)]


def largest_contour_box(quantised: np.ndarray, cut: int) -> tuple[int, int, int, int]:
    """Box of the single largest contour at one cut, the old MaxBoxAcc: the contour with the largest
    ``cv2.contourArea`` among all RETR_TREE contours (the first one on ties, as Python's ``max``);
    (0, 0, 0, 0) when there is none. quantised: (H, W) uint8.
    """
    import cv2  # only the single-contour mode needs OpenCV, whose import takes ~0.2 s

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
