"""Backbones: what every one is (base.py), and one module per backbone (vgg.py, resnet.py,
inception.py), each named by its entry in pipeline/settings/registry.py and imported only through it."""

from pipeline.models.backbones.base import (
    Backbone,
    LoadReport,
    PretrainedWeightsError,
    Variant,
    build_backbone,
    conv_relu,
    initialize,
)

__all__ = ["Backbone", "LoadReport", "PretrainedWeightsError", "Variant", "build_backbone", "conv_relu", "initialize"]
