"""InceptionV3 in its WSOL variants (clovaai/wsolevaluation 96f4b88, ``wsol/inception.py``).

Conv2d_1a padded, pools padded with ceil mode, Mixed_6a at stride 1, ``pool_5d`` (an extra pool
after Mixed_5d) unless ``large_feature_map``, Mixed_7* dropped. Then ``neck``, two new 3x3 convs
to 1024 channels + ReLU (SPG_A3_1b, SPG_A3_2b): with dropout 0.5 before each and after the last for
cam and spg, without for adl (the reference's ADL network has none, so the attention sees the
deterministic feature), absent for acol (its classifiers read Mixed_6e).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.inception import InceptionB

from pipeline.models.backbones.base import Backbone, Variant, conv_relu
from pipeline.settings.sections import Architecture


class _StrideOneInceptionB(InceptionB):
    """Mixed_6a of the WSOL variant: both convolutions and the pool at stride 1, padding 1."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels)
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride, conv.padding = (1, 1), (1, 1)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), double, F.max_pool2d(x, kernel_size=3, stride=1, padding=1)]


def inception_v3(large_feature_map: bool, architecture: Architecture) -> Backbone:
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    for name in ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool", "dropout", "fc"):
        delattr(net, name)
    net.Conv2d_1a_3x3.conv.padding = (1, 1)
    net.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    net.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    net.Mixed_6a = _StrideOneInceptionB(288)
    net.pool_5d = nn.Identity() if large_feature_map else nn.MaxPool2d(3, stride=2, ceil_mode=True)
    stages: list[tuple[str, Sequence[nn.Module]]] = [("stem", [
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1, net.Conv2d_3b_1x1,
        net.Conv2d_4a_3x3, net.maxpool2])]
    names = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "pool_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")
    stages += [(name, [getattr(net, name)]) for name in names]
    if architecture != "acol":
        # InceptionCam/Spg: F.dropout(·, 0.5) before SPG_A3_1b, before SPG_A3_2b and after it; InceptionAdl: none
        dropout = (lambda: nn.Dropout(0.5)) if architecture in ("cam", "spg") else nn.Identity
        net.neck = nn.Sequential(dropout(), *conv_relu(768, 1024), dropout(), *conv_relu(1024, 1024), dropout())
        stages.append(("neck", [net.neck]))
    return Backbone("inception_v3", net, stages, ("neck",), ("Mixed_7", "AuxLogits.", "fc."),
                    Variant(architecture, large_feature_map, "xavier"), reference_key)


def reference_key(key: str, variant: Variant) -> str:
    """A key of our InceptionV3's ``net`` as the reference names it."""
    module, index, rest = (key.split(".", 2) + ["", ""])[:3]
    if module == "neck":  # our neck: [dropout, conv, relu, dropout, conv, relu, dropout]
        return f"{'SPG_A3_1b' if index == '1' else 'SPG_A3_2b'}.0.{rest}"
    return key
