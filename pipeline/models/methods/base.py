"""The method plug-in interface, and CAM (Zhou et al., CVPR 2016), the base every method extends.

A method adds to a backbone (a) an input transform for training (``augment``), (b) modules that
read or replace the feature map at named taps during training (``at_tap``), (c) a classification
head, (d) its loss terms, and (e) how its class activation map is read from the final feature map.
At evaluation the backbone runs plain: ``at_tap`` is never called. A method with an attention at its
taps also says what it saw (``diagnostics``) and shows its maps on any feature (``attention_maps``),
so that every run logs whether its attention learned anything.

``state`` is a dict made afresh for each training forward: ``input_size`` (H, W) and whatever the
method's ``at_tap`` records for its head, losses and diagnostics. It is ``None`` at evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.backbones import Backbone
from pipeline.settings.registry import Section

State = dict[str, object]


@dataclass(frozen=True)
class Targets:
    """Training targets: labels (B,), and for CutMix the pasted images' labels and the fraction
    lam of each image that is its own."""

    labels: torch.Tensor
    mixed_labels: torch.Tensor | None = None
    lam: float = 1.0


def classification_loss(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Cross-entropy; with mixed labels, lam * CE(labels) + (1 - lam) * CE(mixed_labels)."""
    loss = F.cross_entropy(logits, targets.labels)
    if targets.mixed_labels is not None:
        loss = targets.lam * loss + (1 - targets.lam) * F.cross_entropy(logits, targets.mixed_labels)
    return loss


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation of (B, H, W) maps to [0, 1]; a constant (or NaN) map becomes
    zeros, as the reference's ``normalize_scoremap``."""
    flat = maps.flatten(1)
    low = flat.amin(dim=1)[:, None, None]
    span = (flat.amax(dim=1)[:, None, None] - low)
    valid = (span > 0) & ~torch.isnan(flat).any(dim=1)[:, None, None]
    return torch.where(valid, (maps - low) / torch.where(valid, span, torch.ones_like(span)), torch.zeros_like(maps))


def select_class(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) per-class maps -> (B, h, w), the map of each image's class."""
    return maps[torch.arange(maps.shape[0], device=maps.device), classes]


class Method(nn.Module, ABC):
    """The plug-in interface; ``augment``, ``at_tap`` and ``losses`` default to plain classification.
    A method is built as ``Method(backbone, num_classes, settings)``, ``settings`` its section of
    ``method_settings`` (pipeline/settings/registry.py names its class and settings)."""

    # Whether some parameters may receive no gradient in a step (DDP must then look for them).
    may_skip_parameters = False

    def augment(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Targets]:
        """Training-time input transform: images (B, 3, H, W), labels (B,)."""
        return images, Targets(labels)

    def at_tap(self, tap: str, feature: torch.Tensor, state: State) -> torch.Tensor:
        """Training-time hook after each backbone stage; returns the feature the next stage sees."""
        return feature

    @abstractmethod
    def head(self, feature: torch.Tensor, labels: torch.Tensor | None, state: State | None) -> dict[str, torch.Tensor]:
        """Final feature (B, C, h, w) -> outputs, at least ``logits`` (B, K)."""

    def losses(self, outputs: dict[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
        """Named loss terms, weighted; the training loss is their sum."""
        return {"cls": classification_loss(outputs["logits"], targets)}

    def initialise(self) -> None:
        """The method's own initialisation of its layers, run after the reference's initialisation of
        the whole network (and before pretrained weights load into the backbone)."""

    def at_backbone_rate(self, name: str) -> bool:
        """Whether the method's parameter ``name`` (under the method), a layer the reference lacks,
        trains at the backbone's learning rate instead of the new layers' (``WSOLModel.parameter_groups``)."""
        return False

    def diagnostics(self, state: State) -> dict[str, torch.Tensor]:
        """What a training forward saw of the method's attention, as detached scalars named
        ``attention/<tap>/<figure>``: the figures its ``at_tap`` recorded in ``state["figures"][tap]``
        (:func:`pipeline.models.attention.attention_figures`). The training loop averages them over
        each epoch's images."""
        recorded = cast(dict[str, dict[str, torch.Tensor]], state.get("figures", {}))
        return {f"attention/{tap}/{name}": value for tap, figures in recorded.items() for name, value in figures.items()}

    def attention_maps(self, tap: str, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        """The attention maps the method would compute at ``tap`` from ``feature`` (B, C, h, w), by name,
        each (B, 1, h, w) float32; empty at a tap where it has none. Read on train-fullsup every epoch."""
        return {}

    @abstractmethod
    def class_maps(self, feature: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Evaluation: the CAM of class classes[b] (B,) for each image, at feature resolution (B, h, w)."""


class CAM(Method):
    """GAP -> linear classifier; the CAM of class k is sum_c w_kc F_c (bias left out: min-max
    normalisation removes it)."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: Section):
        super().__init__()
        self.classifier = nn.Linear(backbone.out_channels, num_classes)

    def head(self, feature, labels, state):
        return {"logits": self.classifier(feature.mean(dim=(2, 3)))}

    def class_maps(self, feature, classes):
        return torch.einsum("bc,bchw->bhw", self.classifier.weight[classes], feature)
