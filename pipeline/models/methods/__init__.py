"""The WSOL methods as plug-ins, by name."""

from __future__ import annotations

from pipeline.config import MethodsConfig
from pipeline.models.backbones import Backbone
from pipeline.models.methods.acol import ACoL
from pipeline.models.methods.attention_dropout import ADL, ICL
from pipeline.models.methods.base import CAM, Method, Targets, normalize_maps
from pipeline.models.methods.input_erasing import CutMix, HaS
from pipeline.models.methods.spg import SPG

METHODS: dict[str, type[Method]] = {m.name: m for m in (CAM, HaS, ACoL, SPG, ADL, CutMix, ICL)}


def build_method(name: str, backbone: Backbone, num_classes: int, settings: MethodsConfig) -> Method:
    """The method ``name`` for ``backbone``, configured from its section of ``method_settings``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    if name == "cam":
        return CAM(backbone, num_classes)
    return METHODS[name](backbone, num_classes, getattr(settings, name))


__all__ = ["METHODS", "Method", "Targets", "build_method", "normalize_maps"]
