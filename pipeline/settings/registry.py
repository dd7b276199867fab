"""The backbones and methods the pipeline knows: one entry each, and each method's settings.

Everything else reads these entries: ``config`` (the names params.yaml accepts and each method's
settings section), the model factory (the implementation and the backbone variant it needs), the
tuner (the settings a method searches) and the report (display names). Adding a method is a settings
class and an entry here, its implementation in its own module, and its section in params.yaml;
adding a backbone is its module under pipeline/models/backbones/, an entry here, and its sections
in params.yaml (README, "Adding a backbone or a method").

No stage's code dependencies list this file (pipeline/dag/code_deps.py): a run's code fingerprint
holds its own backbone's and method's entries instead, so an entry added or edited here reruns
only the runs it describes. What an entry is, and the settings types, are in pipeline/settings/sections.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from pipeline.settings.sections import (
    BackboneEntry,
    Channels,
    Fraction,
    FreeChoice,
    MethodEntry,
    MethodSection,
    PerBackbone,
    Pixels,
    Positive,
    Section,
    Weight,
)

# --------------------------------------------------------------------------------------- backbones

def _taps(shared: tuple[str, ...], neck: tuple[str, ...], acol_neck: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Taps of the four variants: ``shared`` then ``neck``, except ACoL's variant, which ends in ``acol_neck``."""
    return {architecture: shared + (acol_neck if architecture == "acol" else neck) for architecture in ("cam", "acol", "spg", "adl")}


def _resnet_taps(blocks: tuple[int, ...]) -> dict[str, tuple[str, ...]]:
    layers = tuple(f"layer{layer}.{block}" for layer, count in enumerate(blocks, start=1) for block in range(count))
    return _taps(("stem",) + layers, (), ())


_RESNET_RULE = (("layer4.", "fc."), True)
BACKBONES: dict[str, BackboneEntry] = {entry.name: entry for entry in (
    BackboneEntry("vgg16", "VGG16", "pipeline.models.backbones.vgg:vgg16",
                  _taps(("pool1", "pool2", "pool3", "conv4_3", "pool4", "conv5_3"), ("conv6",), ("pool5",)),
                  ("features.",), False),
    BackboneEntry("resnet50", "ResNet50", "pipeline.models.backbones.resnet:resnet50", _resnet_taps((3, 4, 6, 3)),
                  *_RESNET_RULE),
    # Not in the paper: ResNet18 in ResNet50's WSOL variant, the CPU default (README, "The default benchmark")
    BackboneEntry("resnet18", "ResNet18", "pipeline.models.backbones.resnet:resnet18", _resnet_taps((2, 2, 2, 2)),
                  *_RESNET_RULE),
    BackboneEntry("inception_v3", "InceptionV3", "pipeline.models.backbones.inception:inception_v3",
                  _taps(("stem", "Mixed_5b", "Mixed_5c", "Mixed_5d", "pool_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                         "Mixed_6d", "Mixed_6e"), ("neck",)),
                  ("Mixed", "Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4"), False),
)}
if TYPE_CHECKING:  # a type checker sees names; pydantic validates them against the registered ones
    BackboneName = str
else:
    BackboneName = Literal[tuple(BACKBONES)]


# ----------------------------------------------------------------------------- method settings

PAPER_METHOD = "icl"  # the paper's method; Table 2's rows are its variants (variant_of_icl)

class CamConfig(MethodSection):
    """CAM has no hyperparameters."""


class HasConfig(MethodSection):
    grid_size: Pixels  # side of a hidden patch, pixels of the network input
    drop_rate: Fraction


class AcolConfig(MethodSection):
    threshold: Fraction  # erase where the normalized CAM of classifier A is >= this


class SpgConfig(MethodSection):
    # (high, low) per step: B2 from the CAM, B1 from B2, C from the fused B1/B2 map
    thresholds: list[Annotated[list[Fraction], Field(min_length=2, max_length=2)]] = Field(min_length=3, max_length=3)
    taps: PerBackbone[list[str]]  # (B1's tap, B2's tap)
    branch_width: PerBackbone[Channels]  # channels of the B1/B2 branches (wsol/*.py: 512, 1024 on ResNet50)


class AdlConfig(MethodSection):
    drop_rate: Fraction
    threshold: Fraction  # drop where attention > threshold * max
    taps: PerBackbone[list[str]]


class CutmixConfig(MethodSection):
    beta: Positive
    prob: Fraction


class IclHyper(Section):
    """Table 1 of the paper."""

    drop_rate: Fraction
    gamma_fg: Positive
    gamma_bg: Positive


class IclAblation(Section):
    """Table 2's switches: each ``false`` removes one component."""

    contrastive: bool  # L_ca
    consistency: bool  # L_fc
    non_local: bool  # false: channel-mean attention, as ADL
    dfg_mask: bool  # false: ADL's drop mask instead of M_dfg


class IclConfig(MethodSection):
    margin: Positive
    embedding_dim: Channels
    ca_weight: Weight
    fc_weight: Weight
    # Where the paper is silent (FREE_CHOICES; README, "The paper's free choices"): what each value does
    # is documented where it acts (pipeline/models/attention.py, methods/icl.py, model.py).
    attention_sign: Literal["nonnegative", "free"]  # A >= 0 (ReLU on Eq. 5's value path), or as written
    attention_init: Literal["channel_mean", "reference"]  # A at step 0 = the smoothed channel mean, or the reference's init
    similarity_scale: Literal["cosine", "sqrt_key", "none"]  # Eq. 5's logits: cos(f, g) / tau, f.g / sqrt(C~), or f.g
    similarity_temperature: Positive  # tau of the cosine similarity
    embedding_norm: Literal["l2", "none"]  # L_ca's embeddings on the unit sphere, or raw
    empty_dfg: Literal["importance", "zero"]  # an image whose M_dfg is empty gets sigmoid(A), or a zero feature
    tap_reduction: Literal["mean", "sum"]  # L_ca and L_fc averaged over taps, or summed
    fc_pixels: Literal["mean", "sum", "foreground"]  # Eq. 4 per pixel, summed over pixels, or per pixel of the reference's M_fg
    fc_scale: Literal["max", "raw"]  # Eq. 4 on maps divided by their maximum, or as they are
    attention_lr: Literal["classifier", "backbone"]  # the blocks and embeddings at the new layers' lr, or the backbone's
    ablation: IclAblation
    hyper: PerBackbone[IclHyper]
    taps: PerBackbone[list[str]]  # the last one is L_fc's reference layer


FREE_CHOICES = (
    FreeChoice("attention_sign", "free", "sign", "A of free sign"),
    FreeChoice("attention_init", "reference", "init", "reference init of f, g, z"),
    FreeChoice("similarity_scale", "none", "scale", "unscaled dot product f.g"),
    FreeChoice("embedding_norm", "none", "norm", "unnormalised embedding"),
    FreeChoice("empty_dfg", "zero", "empty", "empty M_dfg zeroes the feature"),
    FreeChoice("tap_reduction", "sum", "taps", "losses summed over taps"),
    FreeChoice("fc_pixels", "sum", "fc", "L_fc summed over pixels"),
    FreeChoice("fc_scale", "raw", "fcscale", "L_fc on raw maps"),
    FreeChoice("attention_lr", "classifier", "lr", "attention at the new layers' lr"),
)
AS_WRITTEN = {choice.key: choice.literal for choice in FREE_CHOICES}  # every choice at its literal reading


# ----------------------------------------------------------------------------------------- methods

def _own(method: str, *keys: str) -> dict[str, str]:
    return {key: f"method_settings.{method}.{key}" for key in keys}


def _icl_entry(name: str, display: str, changes: Mapping[str, object] | None = None) -> MethodEntry:
    """The paper's method, or (``changes``) a Table 2 variant of it."""
    return MethodEntry(name, display, IclConfig, "adl", "pipeline.models.methods.icl:ICL",
                       {key: f"method_settings.{name}.hyper.{{backbone}}.{key}" for key in ("drop_rate", "gamma_fg", "gamma_bg")},
                       variant_of_icl=changes)


_SPG_THRESHOLDS = {f"threshold_{step + 1}{side}": f"method_settings.spg.thresholds.{step}.{index}"
                   for step in range(3) for index, side in enumerate("hl")}

METHODS: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("cam", "CAM", CamConfig, "cam", "pipeline.models.methods.base:CAM", {}),
    MethodEntry("has", "HaS", HasConfig, "cam", "pipeline.models.methods.input_erasing:HaS",
                _own("has", "grid_size", "drop_rate")),
    MethodEntry("acol", "ACoL", AcolConfig, "acol", "pipeline.models.methods.acol:ACoL", _own("acol", "threshold")),
    MethodEntry("spg", "SPG", SpgConfig, "spg", "pipeline.models.methods.spg:SPG", _SPG_THRESHOLDS),
    MethodEntry("adl", "ADL", AdlConfig, "adl", "pipeline.models.methods.adl:ADL", _own("adl", "drop_rate", "threshold")),
    MethodEntry("cutmix", "CutMix", CutmixConfig, "cam", "pipeline.models.methods.input_erasing:CutMix",
                _own("cutmix", "beta", "prob")),
    # The paper's method attaches where ADL does (Sec. 4.1: "the same with the baseline method [9]").
    _icl_entry(PAPER_METHOD, "Ours (ICL)"),
    # Table 2: the paper's method without one component, or with one free choice (or all) at its literal
    # reading, each its own run. Its method_settings section is icl's (params.yaml merges it in) with
    # those settings changed, so a run of each can sit in one DAG beside icl and a change to icl's
    # settings reruns them too.
    *(_icl_entry(f"icl_no_{short}", f"Ours w/o {label}", {f"ablation.{switch}": False})
      for short, switch, label in (("ca", "contrastive", "contrastive"), ("fc", "consistency", "L_fc"),
                                   ("nl", "non_local", "non-local"), ("dfg", "dfg_mask", "M_dfg"))),
    *(_icl_entry(f"icl_lit_{choice.short}", f"Ours, {choice.label}", {choice.key: choice.literal})
      for choice in FREE_CHOICES),
    _icl_entry("icl_as_written", "Ours, every choice as written", AS_WRITTEN),
)}
if TYPE_CHECKING:
    MethodName = str
else:
    MethodName = Literal[tuple(METHODS)]
