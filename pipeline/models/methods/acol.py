"""ACoL (Zhang et al., CVPR 2018): adversarial complementary learning with two classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.backbones import Backbone, conv_relu
from pipeline.models.methods.base import Method, normalize_maps, select_class
from pipeline.settings.registry import AcolConfig

HIDDEN = 1024  # width of each classifier's two 3x3 convolutions, on every backbone (wsol/*.py)


def _conv_classifier(in_channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(*conv_relu(in_channels, HIDDEN), *conv_relu(HIDDEN, HIDDEN), nn.Conv2d(HIDDEN, num_classes, 1))


class ACoL(Method):
    """Classifier A (3x3, 3x3, 1x1 convs, then GAP) scores the final feature map; where A's
    normalised map of the class (the label in training, the prediction otherwise) reaches
    ``threshold``, the feature is erased and classifier B scores the rest. Loss CE(A) + CE(B); the
    CAM is the pixel-wise max of both normalised class maps. The final map is the ``acol`` variant's
    (pipeline/models/backbones.py): VGG16's smoothed pool5 (512 channels), InceptionV3's Mixed_6e
    (768), ResNet50's layer4 (2048), as the reference's VggAcol, InceptionAcol, ResNetAcol."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: AcolConfig):
        super().__init__()
        self.classifier_a = _conv_classifier(backbone.out_channels, num_classes)
        self.classifier_b = _conv_classifier(backbone.out_channels, num_classes)
        self.threshold = settings.threshold

    def head(self, feature, labels, state):
        map_a = self.classifier_a(feature)
        logits = map_a.mean(dim=(2, 3))
        classes = labels if labels is not None else logits.argmax(dim=1)
        attention = normalize_maps(select_class(map_a.detach(), classes))
        map_b = self.classifier_b(feature * (attention < self.threshold).unsqueeze(1).to(feature.dtype))
        return {"logits": logits, "logits_b": map_b.mean(dim=(2, 3)), "map_a": map_a, "map_b": map_b}

    def losses(self, outputs, targets):
        return {"cls": F.cross_entropy(outputs["logits"], targets.labels),
                "cls_b": F.cross_entropy(outputs["logits_b"], targets.labels)}

    def class_maps(self, feature, classes):
        outputs = self.head(feature, classes, None)
        return torch.maximum(normalize_maps(select_class(outputs["map_a"], classes)),
                             normalize_maps(select_class(outputs["map_b"], classes)))
