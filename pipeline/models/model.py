"""A WSOL model: a backbone with a method plugged in, and the one factory for any pair."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.dag.paths import PRETRAINED_WEIGHTS
from pipeline.metrics import RESIZE_LENGTH
from pipeline.models.backbones import Backbone, LoadReport, PretrainedWeightsError, build_backbone, initialize
from pipeline.models.methods import Method, normalize_maps
from pipeline.models.reference import at_classifier_rate, reference_name
from pipeline.settings.config import PRETRAIN_STAGE, Config, ModelConfig, RunSettings
from pipeline.settings.registry import BACKBONES, METHODS
from pipeline.settings.sections import entry, load_attribute

log = logging.getLogger(__name__)


def score_maps(maps: torch.Tensor, size: int = RESIZE_LENGTH) -> torch.Tensor:
    """(B, h, w) maps -> (B, size, size) in [0, 1]: upsampled bicubically (as the reference's
    cv2.INTER_CUBIC) and min-max normalised; constant -> zeros."""
    maps = F.interpolate(maps[:, None], size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    return normalize_maps(maps)


class WSOLModel(nn.Module):
    """In training mode the method's tap modules act; in eval mode the plain network runs."""

    def __init__(self, backbone: Backbone, method: Method):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.pretrained: LoadReport | None = None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """images (B, 3, H, W), labels (B,) or None -> the method's outputs (``logits`` (B, K) and,
        in training, what its losses need, and ``diagnostics``, a dict of detached scalars, when the
        method reports any)."""
        if not self.training:
            return self.method.head(self.backbone(images), labels, None)
        state: dict[str, object] = {"input_size": tuple(images.shape[-2:])}
        feature = self.backbone(images, partial(self.method.at_tap, state=state))
        outputs: dict[str, Any] = self.method.head(feature, labels, state)
        diagnostics = self.method.diagnostics(state)
        if diagnostics:
            outputs["diagnostics"] = diagnostics
        return outputs

    def cams(self, images: torch.Tensor, classes: torch.Tensor, size: int = RESIZE_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K) and CAMs (B, size, size) in [0, 1] of the plain network, for class
        classes[b] of each image, or its predicted class where classes[b] is -1 (:func:`score_maps`)."""
        feature = self.backbone(images)
        logits = self.method.head(feature, None, None)["logits"]
        classes = torch.where(classes < 0, logits.argmax(dim=1), classes)
        return logits, score_maps(self.method.class_maps(feature, classes), size)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(parameters at lr, parameters at lr * lr_classifier_ratio), by clovaai/wsolevaluation's
        rule (main.py, _set_optimizer) applied to each parameter's name there: VGG and Inception
        train ``features`` / ``Mixed*``, ``Conv2d_*`` at lr and the rest at the ratio; ResNet50
        trains ``layer4`` and ``fc`` at the ratio and the rest at lr (so its ACoL and SPG heads at
        lr). Parameters the reference lacks (the paper's attention blocks and embeddings) are new
        layers, at the ratio, unless the method trains them at the backbone's rate (``Method.at_backbone_rate``)."""
        backbone, groups = self.backbone.name, (list[nn.Parameter](), list[nn.Parameter]())
        for name, parameter in self.named_parameters():
            reference = reference_name(name, self.backbone)
            if reference is None:
                at_ratio = not self.method.at_backbone_rate(name.removeprefix("method."))
            else:
                at_ratio = at_classifier_rate(backbone, reference)
            groups[at_ratio].append(parameter)
        return groups


def pretrained_source(settings: ModelConfig, backbone: str, pretrained_folder: Path | None) -> str | None:
    """What ``backbone_settings.<backbone>.pretrained`` (``settings``) loads: None, a torchvision
    weights name, a .pth path, or for ``pretrain`` the pretrain stage's weights in ``pretrained_folder``."""
    source = settings.pretrained
    if source != PRETRAIN_STAGE:
        return source
    path = pretrained_folder / PRETRAINED_WEIGHTS if pretrained_folder is not None else None
    if path is None or not path.is_file():
        raise PretrainedWeightsError(f"backbone_settings.{backbone}.pretrained is {PRETRAIN_STAGE!r} but "
                                     f"{path or 'no pretrain folder'} does not exist: run the pretrain stage "
                                     f"(dvc repro pretrain@{backbone})")
    return str(path)


def build_model(backbone: str, method: str, num_classes: int, settings: RunSettings | Config,
                pretrained_folder: Path | None = None, pretrained: bool = True) -> WSOLModel:
    """Any registered (backbone, method) pair, configured by the run's settings (a :class:`Config`
    is reduced to them): the backbone in the variant the method trains on, the whole network
    initialised as the reference initialises that variant, then pretrained weights loaded when
    ``backbone_settings.<backbone>.pretrained`` names them (:func:`pretrained_source`; the pretrain
    stage's from ``pretrained_folder``), unless ``pretrained`` is false (a trained model's own
    weights are loaded instead)."""
    entry("backbone", BACKBONES, backbone)
    spec = entry("method", METHODS, method)
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    run = settings.run(backbone, method) if isinstance(settings, Config) else settings
    network = build_backbone(backbone, run.model.large_feature_map, spec.architecture)
    plugin = load_attribute(spec.implementation)(network, num_classes, run.method)
    model = WSOLModel(network, plugin)
    initialize(model, network.variant.init_mode)
    plugin.initialise()
    source = pretrained_source(run.model, backbone, pretrained_folder) if pretrained else None
    if source:
        model.pretrained = network.load_pretrained(source)
        log.info("%s: loaded %s; unused keys: %s", backbone, source, ", ".join(model.pretrained.unexpected) or "none")
    return model
