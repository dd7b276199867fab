"""VGG16, ResNet50 and InceptionV3 in their WSOL variants, built from torchvision's modules.

A :class:`Backbone` runs named *stages* in order; the output of each stage is a *tap* where a
method may read or replace the feature map. Parameters keep torchvision's names (under ``net.``),
so ImageNet weights load as they are.

Each backbone is built in the variant clovaai/wsolevaluation (96f4b88, ``wsol/vgg.py``,
``resnet.py``, ``inception.py``) builds for a method's architecture type (``cam`` for CAM, HaS and
CutMix; ``adl`` for ADL and the paper's method; ``acol``; ``spg``). ``large_feature_map`` gives a
28x28 final map at 224 px instead of 14x14:

* VGG16. cam, adl: pool5 removed (pool4 too with ``large_feature_map``), then ``conv6``, a new 3x3
  conv to 1024 channels + ReLU. acol: pools 1-3 are 3x3/2 (padding 1), pool4 3x3/2 (3x3/1 with
  ``large_feature_map``), then ``pool5``, a 3x3/1 max pool and the reference's 3x3/1 average
  smoothing; no conv6 (512 channels). spg: 2x2 pools 1-3, pool4 3x3/2 (none with
  ``large_feature_map``), no pool5, then ``conv6``, two new 3x3 convs 512 -> 512 + ReLU (SPG_A_3).
* ResNet50: layer4 at stride 1, and layer3 too with ``large_feature_map``; one network for every type.
* InceptionV3: Conv2d_1a padded, pools padded with ceil mode, Mixed_6a at stride 1, ``pool_5d`` (an
  extra pool after Mixed_5d) unless ``large_feature_map``, Mixed_7* dropped. Then ``neck``, two new
  3x3 convs to 1024 channels + ReLU (SPG_A3_1b, SPG_A3_2b): with dropout 0.5 before each and after
  the last for cam and spg, without for adl (the reference's ADL network has none, so the attention
  sees the deterministic feature), absent for acol (its classifiers read Mixed_6e).

A pool a variant lacks is an identity stage (VGG's pool4 with ``large_feature_map``, Inception's
pool_5d), so one list of taps serves both map sizes. Each variant also carries the reference's
weight initialisation (``init_mode``), applied by the model factory to the whole network.
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

from pipeline.errors import PipelineError
from pipeline.registry import BACKBONES, Architecture, entry, load_attribute

Hook = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LoadReport:
    """What loading pretrained weights did: the file's keys that no layer of the variant uses."""

    source: str
    unexpected: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """Which WSOL variant of a backbone: the reference's architecture type, the map size, and the
    reference's initialisation of its convolutions for that variant (``wsol/util.py``)."""

    architecture: Architecture
    large_feature_map: bool
    init_mode: str  # "he" (Kaiming normal, fan out) or "xavier" (Glorot uniform)


class PretrainedWeightsError(PipelineError, ValueError):
    """A weights file or name that cannot serve this backbone; the message names it."""


class Backbone(nn.Module):
    """Named stages run in order; each stage's output is a tap.

    ``net`` holds every parameter under torchvision's names; ``new_modules`` are the top-level
    names in ``net`` of layers that ImageNet weights do not cover (loading weights does not look for them).
    """

    def __init__(self, name: str, net: nn.Module, stages: Sequence[tuple[str, Sequence[nn.Module]]],
                 channels: dict[str, int], new_modules: tuple[str, ...], dropped: tuple[str, ...],
                 weights_enum: str, variant: Variant):
        super().__init__()
        self.name = name
        self.variant = variant
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


def initialize(module: nn.Module, mode: str) -> None:
    """The reference's ``initialize_weights``: convolutions Kaiming-normal (fan out, "he") or
    Glorot-uniform ("xavier") with zero bias, batch norms (1, 0), linear layers N(0, 0.01) with zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if mode == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 convolution (padding 1) and its ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=False)]


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
    channels = {"pool1": 64, "pool2": 128, "pool3": 256, "conv4_3": 512, "pool4": 512, "conv5_3": 512}
    if architecture == "acol":
        stages.append(("pool5", [features[30]]))
        channels["pool5"] = 512
    else:
        width = 512 if architecture == "spg" else 1024
        net.conv6 = nn.Sequential(*(conv_relu(512, 512) + conv_relu(512, 512) if architecture == "spg"
                                    else conv_relu(512, 1024)))
        stages.append(("conv6", [net.conv6]))
        channels["conv6"] = width
    init = "xavier" if architecture in ("acol", "spg") else "he"
    return Backbone("vgg16", net, stages, channels, ("conv6",), ("classifier.",), "VGG16_Weights",
                    Variant(architecture, large_feature_map, init))


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
    channels = {"stem": 64}
    for i in range(1, 5):
        for j, block in enumerate(getattr(net, f"layer{i}")):
            stages.append((f"layer{i}.{j}", [block]))
            channels[f"layer{i}.{j}"] = block.bn2.num_features * block.expansion
    init = "he" if architecture == "acol" else "xavier"
    return Backbone(name, net, stages, channels, (), ("fc.",), f"ResNet{name.removeprefix('resnet')}_Weights",
                    Variant(architecture, large_feature_map, init))


def resnet50(large_feature_map: bool, architecture: Architecture) -> Backbone:
    return _resnet("resnet50", large_feature_map, architecture)


def resnet18(large_feature_map: bool, architecture: Architecture) -> Backbone:
    """ResNet18 in ResNet50's WSOL variant (the same strides and taps per layer): the CPU default."""
    return _resnet("resnet18", large_feature_map, architecture)


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
    channels = {"stem": 192, "Mixed_5b": 256, "Mixed_5c": 288, "Mixed_5d": 288, "pool_5d": 288, "Mixed_6a": 768,
                "Mixed_6b": 768, "Mixed_6c": 768, "Mixed_6d": 768, "Mixed_6e": 768}
    if architecture != "acol":
        # InceptionCam/Spg: F.dropout(·, 0.5) before SPG_A3_1b, before SPG_A3_2b and after it; InceptionAdl: none
        dropout = (lambda: nn.Dropout(0.5)) if architecture in ("cam", "spg") else nn.Identity
        net.neck = nn.Sequential(dropout(), *conv_relu(768, 1024), dropout(), *conv_relu(1024, 1024), dropout())
        stages.append(("neck", [net.neck]))
        channels["neck"] = 1024
    return Backbone("inception_v3", net, stages, channels, ("neck",), ("Mixed_7", "AuxLogits.", "fc."),
                    "Inception_V3_Weights", Variant(architecture, large_feature_map, "xavier"))


def build_backbone(name: str, large_feature_map: bool, architecture: Architecture = "cam") -> Backbone:
    """The registered backbone ``name`` in the variant of ``architecture`` (the reference's type)."""
    return load_attribute(entry("backbone", BACKBONES, name).builder)(large_feature_map, architecture)
