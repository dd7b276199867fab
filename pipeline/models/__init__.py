"""Backbones with named taps, WSOL methods as plug-ins, and the factory pairing them."""

from pipeline.models.backbones import Backbone, PretrainedWeightsError, build_backbone
from pipeline.models.methods import Method, Targets
from pipeline.models.model import WSOLModel, build_model, pretrained_source

__all__ = ["Backbone", "Method", "PretrainedWeightsError", "Targets", "WSOLModel", "build_backbone", "build_model", "pretrained_source"]
