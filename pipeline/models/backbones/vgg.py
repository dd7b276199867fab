"""VGG16 in its WSOL variants (clovaai/wsolevaluation 96f4b88, ``wsol/vgg.py``).

cam, adl: pool5 removed (pool4 too with ``large_feature_map``), then ``conv6``, a new 3x3 conv to
1024 channels + ReLU. acol: pools 1-3 are 3x3/2 (padding 1), pool4 3x3/2 (3x3/1 with
``large_feature_map``), then ``pool5``, a 3x3/1 max pool and the reference's 3x3/1 average
smoothing; no conv6 (512 channels). spg: 2x2 pools 1-3, pool4 3x3/2 (none with
``large_feature_map``), no pool5, then ``conv6``, two new 3x3 convs 512 -> 512 + ReLU (SPG_A_3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torchvision
from torch import nn

from pipeline.models.backbones.base import Backbone, Variant, conv_relu
from pipeline.settings.sections import Architecture

# torchvision's indices of VGG16's 13 convolutions in ``features``
TORCHVISION_VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# The same convolutions' indices in the reference's ``features``, built by make_layers from
# configs_dict, where each number is a conv and its ReLU (two indices) and each 'M', 'M1', 'M2' or
# 'A' (an ADL slot) one index. SPG's ``features`` end after pool3: conv4 and conv5 are SPG_A_1, SPG_A_2.
REFERENCE_VGG_CONVS = {
    ("cam", False): TORCHVISION_VGG_CONVS,
    ("cam", True): (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 23, 25, 27),  # no pool4
    ("adl", False): (0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 26, 28, 30),  # 'A' after pool3, conv4_3 and conv5_3
    ("adl", True): (0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 25, 27, 29),
    ("acol", False): TORCHVISION_VGG_CONVS,  # 'M1'/'M2' take the pools' places
    ("acol", True): TORCHVISION_VGG_CONVS,
}

def vgg16(large_feature_map: bool, architecture: Architecture) -> Backbone:
    net = torchvision.models.vgg16(weights=None)
    del net.avgpool, net.classifier
    features = net.features  # conv/ReLU pairs; pool1..5 at indices 4, 9, 16, 23, 30
    if architecture == "acol":  # configs_dict['acol']: 'M1' pools, 'M2' at pool4 (28x28) and after conv5_3
        for index in (4, 9, 16):
            features[index] = nn.MaxPool2d(3, stride=2, padding=1)
        features[23] = nn.MaxPool2d(3, stride=1 if large_feature_map else 2, padding=1)
        # VggAcol.forward: F.avg_pool2d(feature, 3, 1, 1) before the classifiers
        features[30] = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.AvgPool2d(3, stride=1, padding=1))
    else:
        features[30] = nn.Identity()
        if large_feature_map:
            features[23] = nn.Identity()
        elif architecture == "spg":  # VggSpg.forward: F.max_pool2d(x, 3, 2, 1) after SPG_A_1 (conv4)
            features[23] = nn.MaxPool2d(3, stride=2, padding=1)
    stages: list[tuple[str, Sequence[nn.Module]]] = [
        ("pool1", features[0:5]), ("pool2", features[5:10]), ("pool3", features[10:17]), ("conv4_3", features[17:23]),
        ("pool4", [features[23]]), ("conv5_3", features[24:30])]
    if architecture == "acol":
        stages.append(("pool5", [features[30]]))
    else:
        net.conv6 = nn.Sequential(*(conv_relu(512, 512) + conv_relu(512, 512) if architecture == "spg"
                                    else conv_relu(512, 1024)))
        stages.append(("conv6", [net.conv6]))
    init = "xavier" if architecture in ("acol", "spg") else "he"
    return Backbone("vgg16", net, stages, ("conv6",), ("classifier.",), Variant(architecture, large_feature_map, init),
                    reference_key)


def reference_key(key: str, variant: Variant) -> str:
    """A key of our VGG16's ``net`` as the reference names it in this variant."""
    module, index, rest = (key.split(".", 2) + [""])[:3]
    if module == "conv6":  # cam/adl: one conv named conv6; spg: SPG_A_3's two
        return f"SPG_A_3.{index}.{rest}" if variant.architecture == "spg" else f"conv6.{rest}"
    k = TORCHVISION_VGG_CONVS.index(int(index))
    if variant.architecture == "spg":
        if k < 7:
            return key
        return f"SPG_A_{1 if k < 10 else 2}.{2 * ((k - 7) % 3)}.{rest}"
    return f"features.{REFERENCE_VGG_CONVS[variant.architecture, variant.large_feature_map][k]}.{rest}"
