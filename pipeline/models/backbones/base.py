"""What every backbone is: named stages whose outputs are *taps*, in a WSOL variant, with the
reference's initialisation, and ImageNet weights loaded by torchvision's names.

A :class:`Backbone` runs named *stages* in order; the output of each stage is a *tap* where a
method may read or replace the feature map. Parameters keep torchvision's names (under ``net.``),
so ImageNet weights load as they are. Each backbone is one module beside this one (vgg.py,
resnet.py, inception.py) holding its builder and the reference's names of its parameters, and one
entry in pipeline/settings/registry.py (its taps and the reference's learning-rate rule); the channels of
each tap are measured on the built network, never written by hand.

Each backbone is built in the variant clovaai/wsolevaluation (96f4b88, ``wsol/vgg.py``,
``resnet.py``, ``inception.py``) builds for a method's architecture type (``cam`` for CAM, HaS and
CutMix; ``adl`` for ADL and the paper's method; ``acol``; ``spg``). ``large_feature_map`` gives a
28x28 final map at 224 px instead of 14x14. A pool a variant lacks is an identity stage, so one
list of taps serves both map sizes. Each variant also carries the reference's weight
initialisation (``init_mode``), applied by the model factory to the whole network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.errors import PipelineError, first_few
from pipeline.settings.registry import BACKBONES
from pipeline.settings.sections import Architecture, entry, load_attribute

Hook = Callable[[str, torch.Tensor], torch.Tensor]
PROBE_SIDE = 64  # px: the image that measures each tap's channels (every variant keeps a map at this size)


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
                 new_modules: tuple[str, ...], dropped: tuple[str, ...], variant: Variant,
                 reference_key: Callable[[str, Variant], str]):
        """``name``: the registry's, and torchvision's model name (its ImageNet weights); ``stages``:
        (tap, modules of ``net`` run in order); ``reference_key``: a key of ``net``'s state dict ->
        the reference's name of that parameter in this variant (pipeline/models/reference.py)."""
        super().__init__()
        self.name = name
        self.variant = variant
        self.net = net
        self._stages = [(stage, list(modules)) for stage, modules in stages]  # references into net
        self.new_modules = new_modules
        self.dropped = dropped  # prefixes of torchvision keys the variant removes
        self.reference_key = reference_key
        self.channels = self._measured_channels()

    def _measured_channels(self, side: int = PROBE_SIDE) -> dict[str, int]:
        """Channels at each tap, from one pass of a ``side`` x ``side`` zero image in eval mode."""
        channels, training = {}, self.training

        def record(tap: str, x: torch.Tensor) -> torch.Tensor:
            channels[tap] = x.shape[1]
            return x

        self.eval()
        with torch.no_grad():
            self(torch.zeros(1, 3, side, side), record)
        self.train(training)
        return channels

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

    @property
    def pretrained_tap(self) -> str:
        """The last tap whose layers pretrained weights cover (before the variant's new layers)."""
        return [tap for tap in self.tap_names if tap not in self.new_modules][-1]

    def until(self, x: torch.Tensor, tap: str) -> torch.Tensor:
        """x (B, 3, H, W) -> the plain feature map at ``tap`` (B, C, h, w); later stages do not run."""
        self.tap_channels(tap)
        for stage, modules in self._stages:
            for module in modules:
                x = module(x)
            if stage == tap:
                break
        return x

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
        state = _read_weights(source, self.name)
        try:
            result = self.net.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise PretrainedWeightsError(f"pretrained weights {source!r} do not fit {self.name}: {error}") from None
        missing = [k for k in result.missing_keys if k.split(".")[0] not in self.new_modules]
        if missing:
            raise PretrainedWeightsError(f"pretrained weights {source!r} lack {len(missing)} {self.name} "
                                         f"parameter(s): {first_few(missing)}")
        unexpected = tuple(k for k in result.unexpected_keys if not k.startswith(self.dropped))
        return LoadReport(source, unexpected)


def _read_weights(source: str, model: str) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt file, or torchvision's weights ``source`` (``IMAGENET1K_V1``) of ``model``."""
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
        names = torchvision.models.get_model_weights(model)  # e.g. ResNet50_Weights
    except (KeyError, ValueError):
        raise PretrainedWeightsError(f"pretrained: {source!r} is not a .pth file, and torchvision has no weights for "
                                     f"{model}") from None
    try:
        weights = names[source]
    except KeyError:
        raise PretrainedWeightsError(f"pretrained: {source!r} is neither a .pth file nor a weights name of "
                                     f"torchvision's {names.__name__} ({', '.join(names.__members__)})") from None
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


def build_backbone(name: str, large_feature_map: bool, architecture: Architecture = "cam") -> Backbone:
    """The registered backbone ``name`` in the variant of ``architecture`` (the reference's type)."""
    return load_attribute(entry("backbone", BACKBONES, name).builder)(large_feature_map, architecture)
