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

All accuracies are percentages. Memory holds per-threshold counters and one flag per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.metadata import Metadata
from pipeline.metrics.coverage import Coverage
from pipeline.metrics.contour_boxes import multi_contour_hits, single_contour_hits
from pipeline.metrics.conventions import (
    RESIZE_LENGTH,
    cam_thresholds,
    check_scoremaps,
    integer_thresholds,
    quantise,
    rescale_boxes,
)

GT_KNOWN_IOU = 50  # the IoU criterion (%) of GT-known and top-1 localization


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
    maxboxacc_v2: float = field(init=False)

    def __post_init__(self):
        # Mean of MaxBoxAcc over the requested deltas, in their order (the reference's np.average).
        values = [self.multi_contour.maxboxacc[d] for d in self.iou_thresholds]
        object.__setattr__(self, "maxboxacc_v2", float(np.average(values)))

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


class _Counters:
    """Per (delta, tau) counts of correct images, and of correct images with the right class."""

    def __init__(self, n_crit: int, n_taus: int):
        self.correct = np.zeros((n_crit, n_taus), np.int64)
        self.correct_and_classified = np.zeros((n_crit, n_taus), np.int64)

    def add(self, hits: np.ndarray, classified: np.ndarray | None) -> None:
        """hits: (B, K, D) bool; classified: (B,) bool or None."""
        self.correct += hits.sum(axis=0).T
        if classified is not None:
            self.correct_and_classified += hits[classified].sum(axis=0).T

    def result(self, deltas: tuple[int, ...], reported: tuple[int, ...], taus: np.ndarray, images: int,
               with_classes: bool) -> ContourResult:
        boxacc = {d: self.correct[i] * 100.0 / float(images) for i, d in enumerate(deltas)}
        best = {d: int(np.argmax(boxacc[d])) for d in deltas}
        k = best[GT_KNOWN_IOU]
        top1_loc = None
        if with_classes:
            top1_loc = float(self.correct_and_classified[deltas.index(GT_KNOWN_IOU), k] * 100.0 / float(images))
        return ContourResult(
            boxacc={d: boxacc[d] for d in reported},
            maxboxacc={d: float(boxacc[d][best[d]]) for d in reported},
            optimal_threshold={d: float(taus[best[d]]) for d in reported},
            gt_known_loc=float(boxacc[GT_KNOWN_IOU][k]),
            top1_loc=top1_loc,
        )


class BoxEvaluator:
    """Streaming box evaluation of one split: ``accumulate`` per batch, ``compute`` at the end.

    Score maps are (224, 224) arrays in [0, 1], one per image of ``metadata`` and each exactly once.
    Numbers equal the reference ``BoxEvaluator`` (clovaai/wsolevaluation) on the same maps.
    """

    def __init__(self, metadata: Metadata, cam_curve_interval: float = 0.01,
                 iou_thresholds: Sequence[int] = (30, 50, 70), single_contour: bool = False,
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
        self._multi = _Counters(len(self._deltas), len(self.taus))
        self._single = _Counters(len(self._deltas), len(self.taus)) if single_contour else None
        self._with_classes: bool | None = None  # whether batches carry class predictions
        self._classified = 0

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str],
                   predicted_labels: Sequence[int] | None = None, sources: Sequence[str] | None = None) -> None:
        """Add a batch: scoremaps (B, 224, 224) float in [0, 1], their image ids, and optionally the
        predicted classes (B,) for top-1 loc/cls. ``sources`` (e.g. file paths) only label errors."""
        check_scoremaps(scoremaps, image_ids, self.resize_length, sources)
        rows = self._coverage.rows(image_ids)
        with_classes = predicted_labels is not None
        if self._with_classes is None:
            self._with_classes = with_classes
        elif self._with_classes != with_classes:
            raise ValueError("either every batch or none must carry predicted labels")
        classified = None
        if with_classes:
            predicted = np.asarray(predicted_labels, np.int64)
            if predicted.shape != (len(rows),):
                raise ValueError(f"{len(predicted)} predicted labels for {len(rows)} score maps")
            classified = predicted == self._labels[rows]
            self._classified += int(classified.sum())

        quantised = quantise(scoremaps)
        cuts = integer_thresholds(self.taus, quantised)
        self._multi.add(multi_contour_hits(quantised, cuts, self._gt, self._gt_start[rows], self._gt_stop[rows],
                                           self._fractions), classified)
        if self._single is not None:
            hits = np.stack([single_contour_hits(quantised[b], cuts[b], self._gt_of(row), self._fractions)
                             for b, row in enumerate(rows)])
            self._single.add(hits, classified)
        self._coverage.mark(rows)

    def compute(self) -> BoxResult:
        """Scores over every image of the split; raises if some image was never accumulated."""
        images = self._coverage.check_complete()
        with_classes = bool(self._with_classes)
        args = (self._deltas, self.iou_thresholds, self.taus, images, with_classes)
        return BoxResult(
            images=images,
            thresholds=self.taus,
            iou_thresholds=self.iou_thresholds,
            multi_contour=self._multi.result(*args),
            single_contour=self._single.result(*args) if self._single is not None else None,
            top1_cls=self._classified * 100.0 / float(images) if with_classes else None,
        )

    def _gt_of(self, row: int) -> np.ndarray:
        return self._gt[self._gt_start[row]:self._gt_stop[row]]
