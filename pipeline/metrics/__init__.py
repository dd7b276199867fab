"""WSOL evaluation under the *Evaluating WSOL Right* protocol, equal to its reference implementation."""

from pipeline.metrics.box_evaluator import BoxEvaluator, BoxResult, ContourResult
from pipeline.metrics.conventions import RESIZE_LENGTH, ScoremapError, cam_thresholds
from pipeline.metrics.mask_evaluator import MaskEvaluator, MaskResult
from pipeline.metrics.scoremap_folder import evaluate_scoremap_folder

__all__ = [
    "RESIZE_LENGTH",
    "BoxEvaluator",
    "BoxResult",
    "ContourResult",
    "MaskEvaluator",
    "MaskResult",
    "ScoremapError",
    "cam_thresholds",
    "evaluate_scoremap_folder",
]
