"""ADL (Choe & Shim, CVPR 2019): attention-based dropout at chosen taps during training."""

from __future__ import annotations

import torch

from pipeline.models.attention import attention_figures, channel_mean_attention, drop_mask, select_map
from pipeline.models.backbones import Backbone
from pipeline.models.methods.base import CAM
from pipeline.settings.registry import AdlConfig


class ADL(CAM):
    """At each tap, A = channel mean of F; F is multiplied either by the drop mask
    1[A < threshold * max A] (probability drop_rate) or by the importance map sigmoid(A). A, its
    threshold and both maps are float32 under autocast too. It logs the same attention figures as the
    paper's method (its drop mask in M_dfg's place), so the two read side by side."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: AdlConfig):
        super().__init__(backbone, num_classes, settings)
        self.taps = backbone.tap_order(settings.taps.of(backbone.name), f"method_settings.adl.taps.{backbone.name}")
        self.drop_rate = settings.drop_rate
        self.threshold = settings.threshold

    def attention_maps(self, tap, feature):
        return {"attention": channel_mean_attention(feature)} if tap in self.taps else {}

    def at_tap(self, tap, feature, state):
        if tap not in self.taps:
            return feature
        attention = channel_mean_attention(feature)
        theta = self.threshold * attention.amax(dim=(1, 2, 3), keepdim=True)
        dropping = drop_mask(attention, theta)
        state.setdefault("figures", {})[tap] = attention_figures(attention, dropping, theta)
        selected = select_map(torch.sigmoid(attention), dropping, self.drop_rate)
        return feature * selected.to(feature.dtype)
