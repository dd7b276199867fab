"""ResNet50 (and ResNet18, the CPU default) in the WSOL variant (clovaai/wsolevaluation 96f4b88,
``wsol/resnet.py``): layer4 at stride 1, and layer3 too with ``large_feature_map``; one network for
every architecture type. ResNet18 is not in the reference: it takes ResNet50's strides, taps per
layer and parameter names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torchvision
from torch import nn

from pipeline.models.backbones.base import Backbone, Variant
from pipeline.settings.sections import Architecture

# ResNetAdl inserts ADL after layer3's block 0 and layer4's blocks 0 and 2 (_ADL_POSITION).
ADL_RESNET_BLOCKS = {"layer3": {0: 0, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6}, "layer4": {0: 0, 1: 2, 2: 3}}


def _resnet(name: str, large_feature_map: bool, architecture: Architecture) -> Backbone:
    """torchvision's ResNet ``name`` with the WSOL strides (wsolevaluation's ResNet50 variant)."""
    net = getattr(torchvision.models, name)(weights=None)
    del net.avgpool, net.fc
    strided = [net.layer4] + ([net.layer3] if large_feature_map else [])
    for layer in strided:  # torchvision (v1.5) strides in conv2 (bottleneck) or conv1 (basic block) and in the shortcut
        first = layer[0]
        (first.conv2 if hasattr(first, "conv3") else first.conv1).stride = (1, 1)
        first.downsample[0].stride = (1, 1)
    stages: list[tuple[str, Sequence[nn.Module]]] = [("stem", [net.conv1, net.bn1, net.relu, net.maxpool])]
    for i in range(1, 5):
        for j, block in enumerate(getattr(net, f"layer{i}")):
            stages.append((f"layer{i}.{j}", [block]))
    init = "he" if architecture == "acol" else "xavier"
    return Backbone(name, net, stages, (), ("fc.",), Variant(architecture, large_feature_map, init), reference_key)


def resnet50(large_feature_map: bool, architecture: Architecture) -> Backbone:
    return _resnet("resnet50", large_feature_map, architecture)


def resnet18(large_feature_map: bool, architecture: Architecture) -> Backbone:
    """ResNet18 in ResNet50's WSOL variant (the same strides and taps per layer): the CPU default."""
    return _resnet("resnet18", large_feature_map, architecture)


def reference_key(key: str, variant: Variant) -> str:
    """A key of our ResNet's ``net`` as the reference names it in this variant (its ResNet50's names)."""
    layer, block, rest = (key.split(".", 2) + ["", ""])[:3]
    if layer not in ("layer3", "layer4") or variant.architecture not in ("adl", "spg"):
        return key
    if variant.architecture == "adl":
        return f"{layer}.{ADL_RESNET_BLOCKS[layer][int(block)]}.{rest}"
    if layer == "layer4":
        return key
    return f"SPG_A1.0.{rest}" if block == "0" else f"SPG_A2.{int(block) - 1}.{rest}"
