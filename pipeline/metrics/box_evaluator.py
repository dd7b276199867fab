"""MaxBoxAcc, MaxBoxAccV2, GT-known loc, top-1 loc and top-1 cls over a stream of score maps.

Definitions (Choe et al., *Evaluating WSOL Methods Right*, CVPR 2020):

* BoxAcc(delta, tau): % of images for which some box estimated from the map thresholded at tau
  has IoU >= delta with some GT box of the image.
* MaxBoxAcc(delta) = max over tau of BoxAcc(delta, tau).
* MaxBoxAccV2 = mean of MaxBoxAcc over delta in {30, 50, 70}, *multi-contour*: a box from every
  contour. The old MaxBoxAcc is single-contour (the largest contour only) at delta = 50.
* GT-known loc = BoxAcc(50, tau*), tau* the first tau maximising BoxAcc(50, .), class ignored;
  top-1 loc = % of images with the correct predicted class *and* IoU >= 0.5 at that tau*;
  top-1 cls = % of images with the correct predicted class.

All accuracies are percentages. Memory holds, per image, its hits at every (delta, tau) packed to
bits, O(N * D * K / 8) bytes (the multi-contour ones are :class:`BoxRecords`, for the bootstrap),
and whether its class was predicted right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.metadata import Metadata
from pipeline.metrics.contour_boxes import multi_contour_hits, single_contour_hits
from pipeline.metrics.conventions import (
    GT_KNOWN_IOU,
    MAXBOXACC_V2_IOUS,
    RESIZE_LENGTH,
    cam_thresholds,
    check_scoremaps,
    integer_thresholds,
    rescale_boxes,
)
from pipeline.metrics.coverage import Coverage


def accuracies(correct: np.ndarray, top1_correct: np.ndarray | None, images: int,
               deltas: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """BoxAcc of R sets of counts, its first maximising tau per delta, and top-1 loc at GT-known's tau*.

    correct: (R, D, K) images hit at (deltas[d], tau_k); top1_correct: (R, K) images hit at delta 50
    and correctly classified, or None; images: the number each set is a share of. Returns BoxAcc
    (R, D, K) in %, the index of its first maximum over tau (R, D), and top-1 loc (R,) in % or None.
    """
    boxacc = correct * 100.0 / float(images)
    best = boxacc.argmax(axis=2)
    if top1_correct is None:
        return boxacc, best, None
    tau_star = best[:, deltas.index(GT_KNOWN_IOU)]
    return boxacc, best, top1_correct[np.arange(len(best)), tau_star] * 100.0 / float(images)


def mean_maxboxacc(maxboxacc: np.ndarray) -> np.ndarray:
    """MaxBoxAccV2: the mean of MaxBoxAcc (..., deltas), in the requested deltas' order, over its last
    axis (the reference's np.average)."""
    return np.average(maxboxacc, axis=-1)


def _pack(hits: np.ndarray) -> np.ndarray:
    """Hits (B, K, D) bool, as multi_contour_hits returns them -> (B, D, ceil(K / 8)) uint8 bits."""
    return np.packbits(hits.transpose(0, 2, 1), axis=-1)


def _unpack(packed: np.ndarray, taus: int) -> np.ndarray:
    """(N, D, ceil(K / 8)) uint8 bits -> hits (N, D, K) bool, K = taus."""
    return np.unpackbits(packed, axis=-1, count=taus).view(np.bool_)


@dataclass(frozen=True)
class BoxRecords:
    """Per-image multi-contour outcomes of a split, in metadata order: what the bootstrap resamples.

    image_ids: (N,) str; thresholds: tau (K,); deltas: the IoU criteria (D,) in %, the requested ones
    and GT-known's 50; packed_hits: (N, D, ceil(K / 8)) uint8, whether some box has IoU >= delta at
    tau, packed along tau (np.packbits); classified: (N,) bool, whether the predicted class is right,
    or None without class predictions.
    """

    image_ids: np.ndarray
    thresholds: np.ndarray
    deltas: tuple[int, ...]
    packed_hits: np.ndarray
    classified: np.ndarray | None

    def __post_init__(self):
        n, d, k = len(self.image_ids), len(self.deltas), len(self.thresholds)
        if self.packed_hits.shape != (n, d, -(-k // 8)) or (self.classified is not None
                                                             and self.classified.shape != (n,)):
            raise ValueError(f"box records of {n} images, {d} deltas, {k} thresholds: packed hits have shape "
                             f"{self.packed_hits.shape}, classified flags "
                             f"{None if self.classified is None else self.classified.shape}")
        if GT_KNOWN_IOU not in self.deltas:
            raise ValueError(f"box records must score delta {GT_KNOWN_IOU} (GT-known), got {list(self.deltas)}")

    def hits(self) -> np.ndarray:
        """(N, D, K) bool."""
        return _unpack(self.packed_hits, len(self.thresholds))

    def save(self, path: str | Path) -> None:
        """One .npz at exactly ``path``: image_ids, thresholds, deltas, packed_hits and, with class
        predictions, classified."""
        arrays = {"image_ids": self.image_ids, "thresholds": self.thresholds, "deltas": np.array(self.deltas),
                  "packed_hits": self.packed_hits}
        if self.classified is not None:
            arrays["classified"] = self.classified
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> BoxRecords:
        with np.load(path, allow_pickle=False) as data:
            return cls(image_ids=data["image_ids"], thresholds=data["thresholds"],
                       deltas=tuple(int(d) for d in data["deltas"]), packed_hits=data["packed_hits"],
                       classified=data["classified"] if "classified" in data.files else None)


@dataclass(frozen=True)
class ContourResult:
    """Scores of one box-estimation mode (multi- or single-contour). Accuracies in %."""

    boxacc: dict[int, np.ndarray]  # delta -> BoxAcc at every tau, (K,)
    maxboxacc: dict[int, float]  # delta -> MaxBoxAcc
    optimal_threshold: dict[int, float]  # delta -> first tau reaching MaxBoxAcc
    gt_known_loc: float
    top1_loc: float | None  # None without class predictions

    def to_dict(self, curves: bool = True) -> dict:
        out = {
            "maxboxacc": {str(d): v for d, v in self.maxboxacc.items()},
            "optimal_threshold": {str(d): v for d, v in self.optimal_threshold.items()},
            "gt_known_loc": self.gt_known_loc,
            "top1_loc": self.top1_loc,
        }
        if curves:
            out["boxacc"] = {str(d): v.tolist() for d, v in self.boxacc.items()}
        return out


@dataclass(frozen=True)
class BoxResult:
    """Everything :class:`BoxEvaluator` computes. Accuracies in %."""

    images: int
    thresholds: np.ndarray  # tau, (K,)
    iou_thresholds: tuple[int, ...]  # delta in %
    multi_contour: ContourResult
    single_contour: ContourResult | None
    top1_cls: float | None
    records: BoxRecords
    maxboxacc_v2: float = field(init=False)

    def __post_init__(self):
        values = [self.multi_contour.maxboxacc[d] for d in self.iou_thresholds]
        object.__setattr__(self, "maxboxacc_v2", float(mean_maxboxacc(np.array(values))))

    def to_dict(self, curves: bool = True) -> dict:
        """JSON-ready summary; ``maxboxacc`` is the multi-contour MaxBoxAcc per delta."""
        multi = self.multi_contour.to_dict(curves)
        out = {
            "images": self.images,
            "iou_thresholds": list(self.iou_thresholds),
            "maxboxacc": multi.pop("maxboxacc"),
            "maxboxacc_v2": self.maxboxacc_v2,
            **multi,
            "top1_cls": self.top1_cls,
        }
        if self.single_contour is not None:
            out["single_contour"] = self.single_contour.to_dict(curves)
        if curves:
            out["thresholds"] = self.thresholds.tolist()
        return out


def _hit_counts(packed: np.ndarray, taus: int, rows: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """Images hit at each (delta, tau), (D, K) int64, from packed hits (N, D, ceil(K / 8)) uint8,
    unpacked ``chunk`` images at a time (memory O(chunk * D * K), not O(N * D * K)); ``rows``: (N,)
    bool, count only those images."""
    counts = np.zeros((packed.shape[1], taus), np.int64)
    for i in range(0, len(packed), chunk):
        part = packed[i:i + chunk] if rows is None else packed[i:i + chunk][rows[i:i + chunk]]
        counts += _unpack(part, taus).sum(axis=0)
    return counts


def _contour_result(packed: np.ndarray, classified: np.ndarray | None, deltas: tuple[int, ...],
                    reported: tuple[int, ...], taus: np.ndarray) -> ContourResult:
    """Scores of per-image packed hits (N, D, ceil(K / 8)) at (deltas[d], taus[k]); classified: (N,)
    bool or None."""
    g = deltas.index(GT_KNOWN_IOU)
    top1_correct = None if classified is None else _hit_counts(packed, len(taus), classified)[g][None]
    boxacc, best, top1_loc = accuracies(_hit_counts(packed, len(taus))[None], top1_correct, len(packed), deltas)
    boxacc, best = boxacc[0], best[0]
    rows = {d: deltas.index(d) for d in reported}
    return ContourResult(
        boxacc={d: boxacc[i] for d, i in rows.items()},
        maxboxacc={d: float(boxacc[i, best[i]]) for d, i in rows.items()},
        optimal_threshold={d: float(taus[best[i]]) for d, i in rows.items()},
        gt_known_loc=float(boxacc[g, best[g]]),
        top1_loc=None if top1_loc is None else float(top1_loc[0]),
    )


class BoxEvaluator:
    """Streaming box evaluation of one split: ``accumulate`` per batch, ``compute`` at the end.

    Score maps are (224, 224) arrays in [0, 1], one per image of ``metadata`` and each exactly once.
    Numbers equal the reference ``BoxEvaluator`` (clovaai/wsolevaluation) on the same maps. The
    result's ``records`` keep each image's multi-contour hits for bootstrap confidence intervals.
    """

    def __init__(self, metadata: Metadata, cam_curve_interval: float = 0.01,
                 iou_thresholds: Sequence[int] = MAXBOXACC_V2_IOUS, single_contour: bool = False,
                 resize_length: int = RESIZE_LENGTH):
        if metadata.boxes is None:
            raise ValueError(f"{metadata.root}: box evaluation needs box metadata, localization.txt holds masks")
        if not iou_thresholds or any(not 0 < d <= 100 for d in iou_thresholds):
            raise ValueError(f"iou_thresholds must be percentages in (0, 100], got {list(iou_thresholds)}")
        self.metadata = metadata
        self.taus = cam_thresholds(cam_curve_interval)
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        self.single_contour = single_contour
        self.resize_length = resize_length
        # Criteria scored internally: the requested ones and GT-known's 50.
        self._deltas = tuple(sorted(set(self.iou_thresholds) | {GT_KNOWN_IOU}))
        self._fractions = np.array([d / 100 for d in self._deltas])  # compared as the reference: iou >= d/100

        rescaled = [rescale_boxes(metadata.boxes[i], metadata.image_sizes[i], resize_length)
                    for i in metadata.image_ids]
        self._gt = np.concatenate(rescaled).astype(np.int64)
        self._gt_stop = np.cumsum([len(b) for b in rescaled])
        self._gt_start = self._gt_stop - np.array([len(b) for b in rescaled])
        self._labels = np.array([metadata.class_labels[i] for i in metadata.image_ids], np.int64)

        self._coverage = Coverage(metadata)
        # Per image (metadata row): hits packed to bits, (N, D, ceil(K / 8)), and the classified flag.
        packed_shape = (len(metadata), len(self._deltas), -(-len(self.taus) // 8))
        self._multi = np.zeros(packed_shape, np.uint8)
        self._single = np.zeros(packed_shape, np.uint8) if single_contour else None
        self._with_classes: bool | None = None  # whether batches carry class predictions
        self._classified = np.zeros(len(metadata), np.bool_)

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str],
                   predicted_labels: Sequence[int] | None = None, sources: Sequence[str] | None = None) -> None:
        """Add a batch: scoremaps (B, 224, 224) float in [0, 1], their image ids, and optionally the
        predicted classes (B,) for top-1 loc/cls. ``sources`` (e.g. file paths) only label errors."""
        quantised = check_scoremaps(scoremaps, image_ids, self.resize_length, sources)
        self.accumulate_quantised(quantised, image_ids, predicted_labels)

    def accumulate_quantised(self, quantised: np.ndarray, image_ids: Sequence[str],
                             predicted_labels: Sequence[int] | None = None) -> None:
        """Add a batch of maps already checked and quantised (by ``check_scoremaps`` or
        ``check_scoremap``): (B, 224, 224) uint8, as :meth:`accumulate` otherwise."""
        if quantised.dtype != np.uint8 or quantised.shape != (len(image_ids), self.resize_length, self.resize_length):
            raise ValueError(f"expected {len(image_ids)} quantised ({self.resize_length}, {self.resize_length}) "
                             f"uint8 maps, got {quantised.dtype} of shape {quantised.shape}")
        rows = self._coverage.rows(image_ids)
        with_classes = predicted_labels is not None
        if self._with_classes is None:
            self._with_classes = with_classes
        elif self._with_classes != with_classes:
            raise ValueError("either every batch or none must carry predicted labels")
        if with_classes:
            predicted = np.asarray(predicted_labels, np.int64)
            if predicted.shape != (len(rows),):
                raise ValueError(f"{len(predicted)} predicted labels for {len(rows)} score maps")
            self._classified[rows] = predicted == self._labels[rows]

        cuts = integer_thresholds(self.taus, quantised)
        self._multi[rows] = _pack(multi_contour_hits(quantised, cuts, self._gt, self._gt_start[rows],
                                                     self._gt_stop[rows], self._fractions))
        if self._single is not None:
            self._single[rows] = _pack(np.stack([
                single_contour_hits(quantised[b], cuts[b], self._gt_of(row), self._fractions)
                for b, row in enumerate(rows)]))
        self._coverage.mark(rows)

    def compute(self) -> BoxResult:
        """Scores over every image of the split; raises if some image was never accumulated."""
        images = self._coverage.check_complete()
        classified = self._classified if self._with_classes else None
        records = BoxRecords(image_ids=np.array(self.metadata.image_ids, np.str_), thresholds=self.taus,
                             deltas=self._deltas, packed_hits=self._multi, classified=classified)
        args = (classified, self._deltas, self.iou_thresholds, self.taus)
        return BoxResult(
            images=images,
            thresholds=self.taus,
            iou_thresholds=self.iou_thresholds,
            multi_contour=_contour_result(self._multi, *args),
            single_contour=_contour_result(self._single, *args)
            if self._single is not None else None,
            top1_cls=float(classified.sum() * 100.0 / float(images)) if classified is not None else None,
            records=records,
        )

    def _gt_of(self, row: int) -> np.ndarray:
        return self._gt[self._gt_start[row]:self._gt_stop[row]]
