"""What a registry entry is: the settings sections, the entries of a backbone and of a method, and
how an implementation named in one is found. The entries themselves are in pipeline/settings/registry.py.

This module imports no PyTorch: implementations are named as ``"module:attribute"`` and imported
only by the factory.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

# Every numeric method setting has a range a real run could need (non-finite values are refused for
# all params in pipeline/settings/config.py): the papers' margins, gammas, beta, tau and loss weights are
# 0.01..10, their widths and embeddings 128..2048 channels, HaS's patches 16..56 px.
Fraction = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0, le=100)]
Weight = Annotated[float, Field(ge=0, le=100)]  # a loss term's weight
Channels = Annotated[int, Field(ge=1, le=8192)]
# An SGD learning rate: the protocol's chosen ones lie in 1e-5..1e-1 (wsolevaluation's CUB runs:
# 1.3e-5 to 2.2e-3; tune.lr searches up to 0.1); above 10 every recipe diverges.
LearningRate = Annotated[float, Field(gt=0, le=10)]
# Epochs: the paper's settings train CUB 50, ILSVRC 10 (infra/params/paper-*.yaml); 1000 is 20
# times the longest.
Epochs = Annotated[int, Field(ge=1, le=1000)]
WeightDecay = Annotated[float, Field(ge=0, le=1)]  # the protocol's 1e-4 / 5e-4; at 1 the decay outweighs any gradient
Pixels = Annotated[int, Field(ge=1, le=1024)]  # no larger than the largest input side params allow
T = TypeVar("T")
# clovaai/wsolevaluation's architecture types (config.py, get_architecture_type): the backbone
# variant a method trains on. HaS and CutMix use CAM's.
Architecture = Literal["cam", "acol", "spg", "adl"]


class Section(BaseModel):
    """A params.yaml section: frozen, unknown keys refused, types checked strictly."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def _per_backbone(self) -> list[str]:
        """The fields holding a value per backbone: :class:`PerBackbone` ones and a method's ``optimiser``."""
        return [name for name in type(self).model_fields
                if isinstance(getattr(self, name), PerBackbone) or name == OPTIMISER]

    def for_backbone(self, backbone: str) -> dict:
        """The settings as plain values, each per-backbone one reduced to this backbone's (None where a
        sparse one, ``optimiser``, has none)."""
        values = self.model_dump()
        for name in self._per_backbone():
            values[name] = values[name].get(backbone)
        return values

    def only_backbone(self, backbone: str) -> Section:
        """This section with each per-backbone mapping holding ``backbone``'s value only."""
        values = self.model_dump()
        for name in self._per_backbone():
            values[name] = {backbone: values[name][backbone]} if backbone in values[name] else {}
        return type(self).model_validate(values)


OPTIMISER = "optimiser"


class OptimiserOverride(Section):
    """A method's optimiser on one backbone where its source trained it otherwise than the backbone's
    ``backbone_settings`` (a value left out, or None, is the backbone's)."""

    lr: LearningRate | None = None
    weight_decay: WeightDecay | None = None
    lr_decay_epochs: Epochs | None = None
    source: str = Field(min_length=1)  # where the values come from (a paper's section, a script): in the report


class Range(Section):
    """One search dimension: uniform on [low, high], log-uniform with ``log``, whole numbers with
    ``integer``. ``below`` names another setting of the same method's space: the value is then drawn
    on [low, min(high, that setting's value)] (SPG's low thresholds stay under their high ones)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    below: str | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class MethodSearch(Section):
    """The protocol's search for a method (Choe et al., *Evaluating WSOL Right*): ``trials`` random
    draws per backbone on train-fullsup (the DAG's ``search@<backbone>-<method>`` stages; 0: none, the
    run trains with the values params.yaml gives) over the optimiser's ranges (``tune.lr``,
    ``tune.weight_decay``, ``tune.lr_decay_epochs``) and ``space``, the ranges of its own settings
    (the keys its registry entry declares ``tunable``)."""

    trials: Annotated[int, Field(ge=0, le=10_000)] = 0
    space: dict[str, Range] = {}


class MethodSection(Section):
    """A method's params.yaml section: its own settings, ``optimiser``, its overrides per backbone
    (sparse: backbones it trains as ``backbone_settings`` say need no entry), and ``search``."""

    optimiser: dict[str, OptimiserOverride] = {}
    search: MethodSearch = MethodSearch()


def entry(kind: str, table: Mapping[str, T], name: str) -> T:
    """``table[name]``, or a ValueError listing the valid names of this ``kind`` (backbone, method)."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(table)}")
    return table[name]


def load_attribute(path: str):
    """``"package.module:name"`` -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class BackboneEntry:
    name: str  # params.yaml key, and torchvision's model name (its ImageNet weights)
    display: str  # name in the report
    builder: str  # "module:function" of (large_feature_map, architecture) -> Backbone
    # Its tap names in forward order, per architecture variant (what Backbone.tap_names gives;
    # tests/test_models.py checks each): params.yaml's taps are checked against these on load.
    taps: Mapping[str, tuple[str, ...]]  # keyed by Architecture
    # The reference's learning-rate rule (main.py, _FEATURE_PARAM_LAYER_PATTERNS, _set_optimizer): a
    # parameter whose reference name holds one of ``feature_patterns`` trains at lr x
    # lr_classifier_ratio if ``patterns_at_ratio`` (ResNet: layer4 and fc), else at lr (VGG,
    # Inception: their features; the rest at the ratio)
    feature_patterns: tuple[str, ...]
    patterns_at_ratio: bool


class PerBackbone(RootModel[dict[str, T]], Generic[T]):
    """One value per backbone: a mapping from backbone names. Every name must be registered and the
    backbones a configuration selects must be there (pipeline/settings/config.py checks both); a run folder
    keeps its own backbone's value only."""

    model_config = ConfigDict(strict=True, frozen=True)

    def of(self, backbone: str) -> T:
        """The value of ``backbone``, or a ValueError naming the backbones that have one."""
        if backbone not in self.root:
            raise ValueError(f"no value for backbone {backbone!r} (values for: {', '.join(self.root) or 'none'})")
        return self.root[backbone]


@dataclass(frozen=True)
class FreeChoice:
    """A setting of the paper's method that its text leaves open, with the reading closest to the text."""

    key: str  # its IclConfig field
    literal: str  # the formula as written, or where the text says nothing, what the code did before the choice was named
    short: str  # its Table 2 variant is the method icl_lit_<short>
    label: str  # that variant's row in the report


@dataclass(frozen=True)
class MethodEntry:
    name: str  # params.yaml key
    display: str  # name in the report
    settings: type[MethodSection]  # its section under method_settings
    architecture: Architecture  # the backbone variant it trains on
    implementation: str  # "module:class" of the Method plug-in
    # method_settings.<method>.search.space keys -> the params.yaml key each sets ("{backbone}" is filled in)
    tunable: Mapping[str, str]
    # A Table 2 row of the paper's method: the settings (dotted keys of its section) that differ from icl's
    variant_of_icl: Mapping[str, object] | None = None
