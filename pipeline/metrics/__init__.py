"""WSOL evaluation under the *Evaluating WSOL Right* protocol, equal to its reference implementation."""

from pipeline.metrics.bootstrap import (
    bootstrap_box,
    bootstrap_mask,
    confidence_intervals,
    mean_interval,
    paired_difference,
)
from pipeline.metrics.box_evaluator import BoxEvaluator, BoxRecords, BoxResult, ContourResult
from pipeline.metrics.conventions import (
    FALLBACK_CAM_THRESHOLD,
    GT_KNOWN_IOU,
    MAXBOXACC_V2_IOUS,
    RESIZE_LENGTH,
    ScoremapError,
    cam_thresholds,
)
from pipeline.metrics.mask_evaluator import MaskEvaluator, MaskRecords, MaskResult
from pipeline.metrics.scoremap_folder import evaluate_scoremap_folder

__all__ = [
    "FALLBACK_CAM_THRESHOLD",
    "GT_KNOWN_IOU",
    "MAXBOXACC_V2_IOUS",
    "RESIZE_LENGTH",
    "BoxEvaluator",
    "BoxRecords",
    "BoxResult",
    "ContourResult",
    "MaskEvaluator",
    "MaskRecords",
    "MaskResult",
    "ScoremapError",
    "bootstrap_box",
    "bootstrap_mask",
    "cam_thresholds",
    "confidence_intervals",
    "evaluate_scoremap_folder",
    "mean_interval",
    "paired_difference",
]
