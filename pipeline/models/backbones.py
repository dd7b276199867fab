"""VGG16, ResNet50 and InceptionV3 in their WSOL variants, built from torchvision's modules.

A :class:`Backbone` runs named *stages* in order; the output of each stage is a *tap* where a
method may read or replace the feature map. Parameters keep torchvision's names (under ``net.``),
so ImageNet weights load as they are. Variants follow the *Evaluating WSOL Right* protocol:

* VGG16: pool5 removed (and pool4 with ``large_feature_map``), then a new 3x3 conv to 1024
  channels + ReLU (``conv6``): a 14x14 (28x28) map at 224 px.
* ResNet50: layer4 at stride 1, and layer3 too with ``large_feature_map``: 14x14 (28x28).
* InceptionV3: Conv2d_1a padded, pools padded with ceil mode, Mixed_6a at stride 1, an extra pool
  after Mixed_5d unless ``large_feature_map``, Mixed_7* dropped, and a new neck of two 3x3 convs to
  1024 channels with dropout 0.5: 14x14 (28x28).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.inception import InceptionB

Hook = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LoadReport:
    """What loading pretrained weights did: the file's keys that no layer of the variant uses."""

    source: str
    unexpected: tuple[str, ...]


class PretrainedWeightsError(ValueError):
    """A weights file or name that cannot serve this backbone; the message names it."""


class Backbone(nn.Module):
    """Named stages run in order; each stage's output is a tap.

    ``net`` holds every parameter under torchvision's names; ``new_modules`` are the top-level
    names in ``net`` of layers that ImageNet weights do not cover (they train at the higher LR).
    """

    def __init__(self, name: str, net: nn.Module, stages: Sequence[tuple[str, Sequence[nn.Module]]],
                 channels: dict[str, int], new_modules: tuple[str, ...], dropped: tuple[str, ...],
                 weights_enum: str):
        super().__init__()
        self.name = name
        self.net = net
        self._stages = [(stage, list(modules)) for stage, modules in stages]  # references into net
        self.channels = channels
        self.new_modules = new_modules
        self.dropped = dropped  # prefixes of torchvision keys the variant removes
        self.weights_enum = weights_enum

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(stage for stage, _ in self._stages)

    @property
    def out_channels(self) -> int:
        return self.channels[self.tap_names[-1]]

    def tap_channels(self, tap: str, key: str = "tap") -> int:
        """Channels at a tap; an unknown name is an error listing the valid ones (``key`` names the setting)."""
        if tap not in self.channels:
            raise ValueError(f"{key}: {self.name} has no tap {tap!r}; valid taps: {', '.join(self.tap_names)}")
        return self.channels[tap]

    def tap_order(self, taps: Sequence[str], key: str) -> list[str]:
        """The given taps, validated and sorted in forward order."""
        for tap in taps:
            self.tap_channels(tap, key)
        if len(set(taps)) != len(taps):
            raise ValueError(f"{key}: a tap is listed twice: {list(taps)}")
        return [tap for tap in self.tap_names if tap in taps]

    def forward(self, x: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """x (B, 3, H, W) -> final feature map (B, out_channels, h, w); ``hook(tap, feature)`` may
        replace the feature after each stage."""
        for stage, modules in self._stages:
            for module in modules:
                x = module(x)
            if hook is not None:
                x = hook(stage, x)
        return x

    def is_new(self, parameter_name: str) -> bool:
        """Whether a parameter of this module (``net.<...>``) belongs to a layer ImageNet weights lack."""
        return parameter_name.removeprefix("net.").split(".")[0] in self.new_modules

    def load_pretrained(self, source: str) -> LoadReport:
        """Load ImageNet weights: a ``.pth``/``.pt`` file (a state dict in torchvision's names, or a
        dict holding one under ``state_dict``/``model``) or a torchvision weights name such as
        ``IMAGENET1K_V1`` (downloaded by torchvision, so only where the machine can reach it).
        Keys of removed layers are ignored; a backbone key missing from the weights is an error."""
        state = _read_weights(source, self.weights_enum)
        try:
            result = self.net.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise PretrainedWeightsError(f"pretrained weights {source!r} do not fit {self.name}: {error}") from None
        missing = [k for k in result.missing_keys if k.split(".")[0] not in self.new_modules]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise PretrainedWeightsError(f"pretrained weights {source!r} lack {len(missing)} {self.name} "
                                         f"parameter(s): {shown}")
        unexpected = tuple(k for k in result.unexpected_keys if not k.startswith(self.dropped))
        return LoadReport(source, unexpected)


def _read_weights(source: str, weights_enum: str) -> dict[str, torch.Tensor]:
    if source.endswith((".pth", ".pt")) or Path(source).exists():
        path = Path(source)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors have many types
            raise PretrainedWeightsError(f"pretrained weights file {path} is not a readable state dict: {error}") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise PretrainedWeightsError(f"pretrained weights file {path} holds a {type(state).__name__}, not a state dict")
        return state
    try:
        weights = torchvision.models.get_weight(f"{weights_enum}.{source}")
    except (KeyError, ValueError, AttributeError):
        raise PretrainedWeightsError(f"pretrained: {source!r} is neither a .pth file nor a weights name of "
                                     f"torchvision's {weights_enum}") from None
    return weights.get_state_dict(progress=True)


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def vgg16(large_feature_map: bool) -> Backbone:
    net = torchvision.models.vgg16(weights=None)
    del net.avgpool, net.classifier
    features = net.features  # conv/ReLU/pool; pool1..5 at indices 4, 9, 16, 23, 30
    features[30] = nn.Identity()  # pool5 removed
    if large_feature_map:
        features[23] = nn.Identity()  # pool4 removed
    net.conv6 = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=False))
    _he_init(net.conv6)
    stages = [("pool1", features[0:5]), ("pool2", features[5:10]), ("pool3", features[10:17]),
              ("conv4_3", features[17:23])]
    if not large_feature_map:
        stages.append(("pool4", [features[23]]))
    stages += [("conv5_3", features[24:30]), ("conv6", [net.conv6])]
    channels = {"pool1": 64, "pool2": 128, "pool3": 256, "conv4_3": 512, "pool4": 512, "conv5_3": 512, "conv6": 1024}
    return Backbone("vgg16", net, stages, {s: channels[s] for s, _ in stages}, ("conv6",), ("classifier.",),
                    "VGG16_Weights")


def resnet50(large_feature_map: bool) -> Backbone:
    net = torchvision.models.resnet50(weights=None)
    del net.avgpool, net.fc
    strided = [net.layer4] + ([net.layer3] if large_feature_map else [])
    for layer in strided:  # torchvision (v1.5) strides in conv2 and in the shortcut
        layer[0].conv2.stride = (1, 1)
        layer[0].downsample[0].stride = (1, 1)
    stages: list[tuple[str, Sequence[nn.Module]]] = [("stem", [net.conv1, net.bn1, net.relu, net.maxpool])]
    channels = {"stem": 64}
    for i, width in zip(range(1, 5), (256, 512, 1024, 2048)):
        for j, block in enumerate(getattr(net, f"layer{i}")):
            stages.append((f"layer{i}.{j}", [block]))
            channels[f"layer{i}.{j}"] = width
    return Backbone("resnet50", net, stages, channels, (), ("fc.",), "ResNet50_Weights")


class _StrideOneInceptionB(InceptionB):
    """Mixed_6a of the WSOL variant: both convolutions and the pool at stride 1, padding 1."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels)
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride, conv.padding = (1, 1), (1, 1)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), double, F.max_pool2d(x, kernel_size=3, stride=1, padding=1)]


def inception_v3(large_feature_map: bool) -> Backbone:
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    for name in ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool", "dropout", "fc"):
        delattr(net, name)
    net.Conv2d_1a_3x3.conv.padding = (1, 1)
    net.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    net.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    net.Mixed_6a = _StrideOneInceptionB(288)
    net.neck = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU(inplace=False),
                             nn.Dropout(0.5), nn.Conv2d(1024, 1024, 3, padding=1), nn.ReLU(inplace=False),
                             nn.Dropout(0.5))
    for m in net.neck:
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    stages: list[tuple[str, Sequence[nn.Module]]] = [("stem", [
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1, net.Conv2d_3b_1x1,
        net.Conv2d_4a_3x3, net.maxpool2])]
    stages += [(name, [getattr(net, name)]) for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d")]
    if not large_feature_map:
        net.pool_5d = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        stages.append(("pool_5d", [net.pool_5d]))
    stages += [(name, [getattr(net, name)]) for name in ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")]
    stages.append(("neck", [net.neck]))
    channels = {"stem": 192, "Mixed_5b": 256, "Mixed_5c": 288, "Mixed_5d": 288, "pool_5d": 288, "Mixed_6a": 768,
                "Mixed_6b": 768, "Mixed_6c": 768, "Mixed_6d": 768, "Mixed_6e": 768, "neck": 1024}
    return Backbone("inception_v3", net, stages, {s: channels[s] for s, _ in stages}, ("neck", "pool_5d"),
                    ("Mixed_7", "AuxLogits.", "fc."), "Inception_V3_Weights")


BACKBONES: dict[str, Callable[[bool], Backbone]] = {"vgg16": vgg16, "resnet50": resnet50, "inception_v3": inception_v3}


def build_backbone(name: str, large_feature_map: bool) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name](large_feature_map)
