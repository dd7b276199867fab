"""A WSOL model: a backbone with a method plugged in, and the one factory for any pair."""

from __future__ import annotations

import logging
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import Config
from pipeline.metrics import RESIZE_LENGTH
from pipeline.models.backbones import BACKBONES, Backbone, LoadReport, build_backbone
from pipeline.models.methods import Method, build_method, normalize_maps

log = logging.getLogger(__name__)


class WSOLModel(nn.Module):
    """In training mode the method's tap modules act; in eval mode the plain network runs."""

    def __init__(self, backbone: Backbone, method: Method):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.pretrained: LoadReport | None = None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W), labels (B,) or None -> the method's outputs (``logits`` (B, K) and,
        in training, what its losses need)."""
        if not self.training:
            return self.method.head(self.backbone(images), labels, None)
        state: dict[str, object] = {"input_size": tuple(images.shape[-2:])}
        feature = self.backbone(images, partial(self.method.at_tap, state=state))
        return self.method.head(feature, labels, state)

    def cams(self, images: torch.Tensor, classes: torch.Tensor, size: int = RESIZE_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K) and CAMs (B, size, size) in [0, 1] of the plain network, for class
        classes[b] of each image, or its predicted class where classes[b] is -1. The map is upsampled
        bicubically (as the reference's cv2.INTER_CUBIC) and min-max normalised; constant -> zeros."""
        feature = self.backbone(images)
        logits = self.method.head(feature, None, None)["logits"]
        classes = torch.where(classes < 0, logits.argmax(dim=1), classes)
        maps = self.method.class_maps(feature, classes)[:, None]
        maps = F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        return logits, normalize_maps(maps)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained-backbone parameters, new-layer parameters): the classifier, the backbone's
        extra layers and every method module are new and train at lr * lr_classifier_ratio."""
        pretrained, new = [], []
        for name, parameter in self.named_parameters():
            is_backbone = name.startswith("backbone.") and not self.backbone.is_new(name.removeprefix("backbone."))
            (pretrained if is_backbone else new).append(parameter)
        return pretrained, new


def build_model(backbone: str, method: str, num_classes: int, config: Config, pretrained: bool = True) -> WSOLModel:
    """Any (backbone, method) pair, configured by ``backbone_settings`` and ``method_settings``;
    ImageNet weights are loaded when ``backbone_settings.<backbone>.pretrained`` names them (and
    ``pretrained`` is true: a trained model's own weights are loaded instead)."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    settings = config.backbone_settings.of(backbone)
    network = build_backbone(backbone, settings.large_feature_map)
    model = WSOLModel(network, build_method(method, network, num_classes, config.method_settings))
    if pretrained and settings.pretrained:
        model.pretrained = network.load_pretrained(settings.pretrained)
        log.info("%s: loaded %s; unused keys: %s", backbone, settings.pretrained,
                 ", ".join(model.pretrained.unexpected) or "none")
    return model
