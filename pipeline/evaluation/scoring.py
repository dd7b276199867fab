"""Scoring a model on one split under the protocol: per-epoch validation on train-fullsup during
training, and the final evaluation on test.

CAMs are those of the ground-truth class (the protocol's MaxBoxAccV2, GT-known loc and PxAP), at
224x224; the predicted class gives top-1 cls, and top-1 loc (correct class and IoU >= 0.5 at the
optimal threshold: the GT-class CAM is the predicted-class CAM whenever the class is right).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_loader
from pipeline.data.metadata import load_metadata
from pipeline.metrics import MAXBOXACC_V2_IOUS, BoxEvaluator, BoxResult, MaskEvaluator, MaskResult
from pipeline.metrics.regions import RegionEvaluator, RegionResult
from pipeline.settings.config import Config, DataConfig

# (images (B, 3, H, W) normalised, CAMs (B, 224, 224), labels, predictions, image ids) of each batch
BatchObserver = Callable[[torch.Tensor, np.ndarray, list[int], list[int], list[str]], None]
# images (B, 3, H, W), classes (B,) -> logits (B, K), CAMs (B, 224, 224) in [0, 1]: WSOLModel.cams or an
# export; logits None for a map that predicts no class (the center-Gaussian baseline)
CamFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]]


@dataclass(frozen=True)
class Scoring:
    """How a split is scored: thresholds' step, IoU criteria (%), CAMs per batch."""

    cam_curve_interval: float
    iou_thresholds: tuple[int, ...] = MAXBOXACC_V2_IOUS
    batch_size: int = 32


def test_scoring(config: Config) -> Scoring:
    """The protocol's scoring on test: evaluate.cam_curve_interval and evaluate.iou_thresholds."""
    return Scoring(config.evaluate.cam_curve_interval, tuple(config.evaluate.iou_thresholds), config.evaluate.batch_size)


def val_scoring(config: Config) -> Scoring:
    """The per-epoch MaxBoxAccV2 on train-fullsup: train.val_cam_curve_interval, IoU 30/50/70."""
    return Scoring(config.train.val_cam_curve_interval, batch_size=config.evaluate.batch_size)


@dataclass(frozen=True)
class SplitScores:
    """Accuracies in %; ``box`` for box datasets, ``mask`` where masks exist (both for synth);
    ``regions`` where the CAMs go, when asked for (region maps, or masks' object/background)."""

    images: int
    top1_cls: float | None  # None without class predictions
    box: BoxResult | None
    mask: MaskResult | None
    regions: RegionResult | None = None

    @property
    def localization(self) -> float:
        """The protocol's model-selection score: MaxBoxAccV2, or PxAP for a mask-only dataset."""
        if self.box is not None:
            return self.box.maxboxacc_v2
        assert self.mask is not None  # a split scores boxes, masks or both
        return self.mask.pxap

    def summary(self) -> dict[str, float | None]:
        """Scalar metrics, flat, for logs and JSON: maxboxacc_v2, maxboxacc_<delta>, gt_known_loc,
        top1_loc, top1_cls, pxap (those that apply)."""
        out: dict[str, float | None] = {"top1_cls": self.top1_cls}
        if self.box is not None:
            out["maxboxacc_v2"] = self.box.maxboxacc_v2
            out.update({f"maxboxacc_{d}": v for d, v in self.box.multi_contour.maxboxacc.items()})
            out["gt_known_loc"] = self.box.multi_contour.gt_known_loc
            out["top1_loc"] = self.box.multi_contour.top1_loc
        if self.mask is not None:
            out["pxap"] = self.mask.pxap
        return out


def region_evaluator(info: DatasetInfo, split: str, cam_curve_interval: float) -> RegionEvaluator | None:
    """The split's region shares: from the dataset's region maps, else its masks' object and
    background, else none."""
    if info.region_root is not None:
        return RegionEvaluator.from_region_maps(info.metadata(split, "none"), info.region_root,
                                                cam_curve_interval=cam_curve_interval)
    mask_folder = info.mask_metadata_dir(split)
    if mask_folder is not None:
        assert info.mask_root is not None  # a dataset with mask metadata has its masks
        return RegionEvaluator.from_masks(load_metadata(mask_folder, "masks"), info.mask_root, cam_curve_interval)
    return None


@torch.no_grad()
def score_split(cams: CamFunction, info: DatasetInfo, split: str, data: DataConfig, settings: Scoring,
                device: torch.device, observe: BatchObserver | None = None, regions: bool = False,
                prepared: Path | None = None) -> SplitScores:
    """Score the CAMs of every image of a split (the caller puts a model in eval mode); images are
    loaded with the test transform of ``data``, from the prepare stage's ``prepared`` folder when it
    holds the split. ``observe`` sees each batch; ``regions`` adds the region shares."""
    metadata = info.metadata(split)
    boxes = BoxEvaluator(metadata, settings.cam_curve_interval, settings.iou_thresholds) \
        if metadata.boxes is not None else None
    mask_folder = info.mask_metadata_dir(split)
    masks = MaskEvaluator(load_metadata(mask_folder, "masks"), info.mask_root, settings.cam_curve_interval) \
        if mask_folder is not None and info.mask_root is not None else None
    shares = region_evaluator(info, split, settings.cam_curve_interval) if regions else None
    correct = total = 0
    for images, labels, image_ids in split_loader(info, split, data, settings.batch_size, train=False, prepared=prepared):
        logits, cam_maps = cams(images.to(device), labels.to(device))
        predicted = logits.argmax(dim=1).cpu() if logits is not None else None
        maps = cam_maps.float().cpu().numpy()
        correct += int((predicted == labels).sum()) if predicted is not None else 0
        total += len(labels)
        classes = predicted.tolist() if predicted is not None else None
        if boxes is not None:
            boxes.accumulate(maps, list(image_ids), classes)
        if masks is not None:
            masks.accumulate(maps, list(image_ids))
        if shares is not None:
            shares.accumulate(maps, list(image_ids))
        if observe is not None:
            observe(images, maps, labels.tolist(), classes, list(image_ids))  # type: ignore[arg-type]
    return SplitScores(total, correct * 100.0 / total if logits is not None else None,
                       boxes.compute() if boxes else None, masks.compute() if masks else None,
                       shares.compute() if shares else None)
