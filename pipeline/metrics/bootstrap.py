"""Bootstrap confidence intervals of the evaluator's accuracies, from its per-image records.

A resample draws N of the N test images with replacement: its image counts (N,) are multinomial
(N; 1/N, ..., 1/N). Every statistic is recomputed on each resample exactly as defined (Choe et al.,
*Evaluating WSOL Methods Right*; clovaai/wsolevaluation), the max over tau and the choice of tau*
included, from the count-weighted sums of per-image columns: R resamples' counts (R, N) times the
columns (N, C) give every sum in one matrix product. Intervals are percentile intervals. A paired
bootstrap applies the same resamples to two runs scored on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.metrics.box_evaluator import BoxRecords, BoxResult, accuracies, mean_maxboxacc
from pipeline.metrics.conventions import GT_KNOWN_IOU, MAXBOXACC_V2_IOUS
from pipeline.metrics.mask_evaluator import MaskRecords, MaskResult, pr_curve

CHUNK_BYTES = 200 * 2**20  # memory for one chunk of resample counts and their sums
Records = BoxRecords | MaskRecords


@dataclass(frozen=True)
class _Statistics:
    """Metrics as functions of weighted per-image sums."""

    columns: np.ndarray  # (N, C) per-image values whose weighted sums the metrics need
    metrics: Callable[[np.ndarray], dict[str, np.ndarray]]  # sums (R, C) float64 -> name -> (R,) in %

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights: (R, N) counts of each image in each of R resamples."""
        return self.metrics((weights.astype(self.columns.dtype) @ self.columns).astype(np.float64))


def _box_statistics(records: BoxRecords, iou_thresholds: Sequence[int]) -> _Statistics:
    """maxboxacc_<delta> per requested delta, maxboxacc_v2, gt_known_loc and, with class flags,
    top1_loc and top1_cls. Columns: hits (D * K), then hits at delta 50 and classified (K), classified (1);
    float32, exact for sums of counts below 2**24 images."""
    reported = tuple(int(d) for d in iou_thresholds)
    if not reported or not set(reported) <= set(records.deltas):
        raise ValueError(f"iou_thresholds {list(reported)} must be among the records' deltas {list(records.deltas)}")
    hits = records.hits()
    n, d, k = hits.shape
    g = records.deltas.index(GT_KNOWN_IOU)
    columns = [hits.reshape(n, d * k)]
    if records.classified is not None:
        columns += [hits[:, g] & records.classified[:, None], records.classified[:, None]]

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        top1_correct = sums[:, d * k:d * k + k] if records.classified is not None else None
        boxacc, best, top1_loc = accuracies(sums[:, :d * k].reshape(-1, d, k), top1_correct, n, records.deltas)
        maxboxacc = np.take_along_axis(boxacc, best[:, :, None], axis=2)[:, :, 0]  # (R, D)
        out = {f"maxboxacc_{delta}": maxboxacc[:, records.deltas.index(delta)] for delta in reported}
        out["maxboxacc_v2"] = mean_maxboxacc(np.stack([out[f"maxboxacc_{delta}"] for delta in reported], axis=1))
        out["gt_known_loc"] = maxboxacc[:, g]
        if top1_loc is not None:
            out["top1_loc"] = top1_loc
            out["top1_cls"] = sums[:, -1] * 100.0 / float(n)
        return out

    return _Statistics(np.concatenate(columns, axis=1).astype(np.float32), metrics)


def _mask_statistics(records: MaskRecords) -> _Statistics:
    """pxap. Columns: foreground then background pixels per bin; float64, exact for any split."""
    bins = records.foreground.shape[1]

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        return {"pxap": np.array([pr_curve(row[:bins], row[bins:])[0] for row in sums])}

    return _Statistics(np.concatenate([records.foreground, records.background], axis=1).astype(np.float64), metrics)


def _statistics(records: Records, iou_thresholds: Sequence[int]) -> _Statistics:
    if isinstance(records, MaskRecords):
        return _mask_statistics(records)
    return _box_statistics(records, iou_thresholds)


def _resampled(statistics: Sequence[_Statistics], samples: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Each statistic on the same ``samples`` resamples: name -> (samples,) per statistic. The counts
    come from np.random.default_rng(seed), drawn in chunks of at most CHUNK_BYTES (the same draws
    whatever the chunk size)."""
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"bootstrap samples must be a whole number >= 1, got {samples!r}")
    n = len(statistics[0].columns)
    # Bytes per resample: its counts and its sums, each held in two dtypes of at most 8 bytes.
    rows = max(1, CHUNK_BYTES // (16 * (n + max(s.columns.shape[1] for s in statistics))))
    rng = np.random.default_rng(seed)
    chunks: list[list[dict[str, np.ndarray]]] = [[] for _ in statistics]
    for start in range(0, samples, rows):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(rows, samples - start))
        for statistic, out in zip(statistics, chunks, strict=False):
            out.append(statistic(weights))
    return [{name: np.concatenate([c[name] for c in out]) for name in out[0]} for out in chunks]


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap values (samples,) at confidence ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_box(records: BoxRecords, iou_thresholds: Sequence[int] = MAXBOXACC_V2_IOUS, samples: int = 1000,
                  seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals (%) of maxboxacc_v2 (mean over ``iou_thresholds``), maxboxacc_<delta> per
    delta, gt_known_loc and, with class flags, top1_loc and top1_cls."""
    [values] = _resampled([_box_statistics(records, iou_thresholds)], samples, seed)
    return {name: _interval(v, level) for name, v in values.items()}


def bootstrap_mask(records: MaskRecords, samples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict[str, tuple[float, float]]:
    """{"pxap": percentile interval (%)}: PxAP of each resample's summed per-image histograms."""
    [values] = _resampled([_mask_statistics(records)], samples, seed)
    return {"pxap": _interval(values["pxap"], level)}


def confidence_intervals(result: BoxResult | MaskResult, samples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> dict[str, list[float]]:
    """JSON-ready {metric: [low, high]} of an evaluator's result (its records; box metrics over its
    iou_thresholds)."""
    if isinstance(result, MaskResult):
        intervals = bootstrap_mask(result.records, samples, seed, level)
    else:
        intervals = bootstrap_box(result.records, result.iou_thresholds, samples, seed, level)
    return {name: list(interval) for name, interval in intervals.items()}


def _check_same_images(a: Records, b: Records) -> None:
    if type(a) is not type(b):
        raise ValueError(f"paired records must be of one kind, got {type(a).__name__} and {type(b).__name__}")
    if len(a.image_ids) != len(b.image_ids):
        raise ValueError(f"paired records must hold the same images: {len(a.image_ids)} against {len(b.image_ids)}")
    differ = np.flatnonzero(a.image_ids != b.image_ids)
    if len(differ):
        i = differ[0]
        raise ValueError(f"paired records must hold the same images in the same order: row {i} is "
                         f"{str(a.image_ids[i])!r} in the first, {str(b.image_ids[i])!r} in the second "
                         f"({len(differ)} row(s) differ)")


def _runs(records: Records | Sequence[Records]) -> list[Records]:
    return [records] if isinstance(records, (BoxRecords, MaskRecords)) else list(records)


def _run_means(runs: Sequence[Records], metric: str, iou_thresholds: Sequence[int], samples: int,
               seed: int) -> tuple[float, np.ndarray]:
    """The mean of ``metric`` over runs scored on the same images (e.g. one per seed): its point
    estimate and its values on ``samples`` resamples shared by every run (same seed, same images)."""
    for other in runs[1:]:
        _check_same_images(runs[0], other)
    statistics = [_statistics(r, iou_thresholds) for r in runs]
    ones = np.ones((1, len(runs[0].image_ids)), np.int64)
    estimates = [s(ones) for s in statistics]
    names = sorted(set.intersection(*(set(e) for e in estimates)))
    if metric not in names:
        raise ValueError(f"metric {metric!r} is not one of the records' metrics: {', '.join(names)}")
    values = _resampled(statistics, samples, seed)
    return (float(np.mean([e[metric][0] for e in estimates])),
            np.mean([v[metric] for v in values], axis=0))


def mean_interval(runs: Records | Sequence[Records], metric: str, iou_thresholds: Sequence[int] = MAXBOXACC_V2_IOUS,
                  samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean of metric over the runs, low, high): the percentile interval over test images of the
    runs' mean, every run resampled with the same images (one run: its own interval)."""
    estimate, values = _run_means(_runs(runs), metric, iou_thresholds, samples, seed)
    return (estimate, *_interval(values, level))


def paired_difference(a: Records | Sequence[Records], b: Records | Sequence[Records], metric: str,
                      iou_thresholds: Sequence[int] = MAXBOXACC_V2_IOUS, samples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """metric(a) - metric(b) in percentage points and its percentile interval, (difference, low, high),
    from the same resamples of the images both sides hold (same ids, same order). Each side is one
    run's records or several (seeds), whose mean it compares. ``metric``: a name bootstrap_box or
    bootstrap_mask reports; ``iou_thresholds`` apply to box records."""
    runs_a, runs_b = _runs(a), _runs(b)
    _check_same_images(runs_a[0], runs_b[0])
    estimate_a, values_a = _run_means(runs_a, metric, iou_thresholds, samples, seed)
    estimate_b, values_b = _run_means(runs_b, metric, iou_thresholds, samples, seed)
    low, high = _interval(values_a - values_b, level)
    return estimate_a - estimate_b, low, high
