"""Methods that multiply the feature map at chosen taps by an attention-derived map during
training: ADL (Choe & Shim, CVPR 2019) and the paper's method (Ki et al., ACCV 2020)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import AdlConfig, IclConfig
from pipeline.models.attention import (
    NonLocalAttention,
    attention_thresholds,
    background_mask,
    channel_mean_attention,
    contrastive_attention_loss,
    drop_mask,
    dropped_foreground_mask,
    foreground_consistency_loss,
    foreground_mask,
    masked_average,
    select_map,
)
from pipeline.models.backbones import Backbone
from pipeline.models.methods.base import CAM


def _module_key(tap: str) -> str:
    """Tap names such as 'layer3.0' as ModuleDict keys (no dots allowed)."""
    return tap.replace(".", "_")


class ADL(CAM):
    """Attention-based dropout: at each tap, A = channel mean of F; F is multiplied either by the
    drop mask 1[A < threshold * max A] (probability drop_rate) or by the importance map sigmoid(A)."""

    name = "adl"

    def __init__(self, backbone: Backbone, num_classes: int, settings: AdlConfig):
        super().__init__(backbone, num_classes)
        self.taps = backbone.tap_order(settings.taps.of(backbone.name), f"method_settings.adl.taps.{backbone.name}")
        self.drop_rate = settings.drop_rate
        self.threshold = settings.threshold

    def at_tap(self, tap, feature, state):
        if tap not in self.taps:
            return feature
        attention = channel_mean_attention(feature)
        theta = self.threshold * attention.amax(dim=(1, 2, 3), keepdim=True)
        return feature * select_map(torch.sigmoid(attention), drop_mask(attention, theta), self.drop_rate)


class ICL(CAM):
    """In-sample contrastive learning and consistent attention (the paper, Sec. 3).

    At each tap a non-local attention block (Eq. 5) gives A; the feature is multiplied by M_dfg
    (Eq. 1; probability drop_rate) or by sigmoid(A). L_ca (Eq. 3) compares masked-GAP features of F
    under M_dfg, M_fg and M_bg (Eq. 2) in a 1x1-conv embedding, summed over taps; L_fc (Eq. 4) ties
    every earlier tap's A to the last tap's. Total loss Eq. 6: L_cls + ca_weight L_ca + fc_weight L_fc.

    The 1x1-conv embedding then masked GAP is computed as masked GAP then a linear layer (equal,
    the embedding being affine); an empty mask embeds to zeros. The ablation switches of Table 2
    replace the non-local block by the channel mean, or M_dfg (in the forward only; L_ca keeps its
    definition) by ADL's drop mask, or drop L_ca or L_fc.
    """

    name = "icl"
    may_skip_parameters = True  # when M_dfg is drawn, the last tap's block gets no gradient

    def __init__(self, backbone: Backbone, num_classes: int, settings: IclConfig):
        super().__init__(backbone, num_classes)
        key = f"method_settings.icl.taps.{backbone.name}"
        self.taps = backbone.tap_order(settings.taps.of(backbone.name), key)
        if not self.taps:
            raise ValueError(f"{key}: the method needs at least one tap")
        self.hyper = settings.hyper.of(backbone.name)
        self.ablation = settings.ablation
        self.margin = settings.margin
        self.weights = {"ca": settings.ca_weight, "fc": settings.fc_weight}
        channels = {_module_key(t): backbone.channels[t] for t in self.taps}
        self.attention = nn.ModuleDict({k: NonLocalAttention(c) for k, c in channels.items()}) \
            if self.ablation.non_local else None
        self.embedding = nn.ModuleDict({k: nn.Linear(c, settings.embedding_dim) for k, c in channels.items()}) \
            if self.ablation.contrastive else None

    def at_tap(self, tap, feature, state):
        if tap not in self.taps:
            return feature
        key = _module_key(tap)
        attention = self.attention[key](feature) if self.attention is not None else channel_mean_attention(feature)
        theta_fg, theta_bg = attention_thresholds(attention, self.hyper.gamma_fg, self.hyper.gamma_bg)
        dropped_fg = dropped_foreground_mask(attention, theta_fg, theta_bg)
        state.setdefault("attention", []).append(attention)
        if self.embedding is not None:
            z = [self._embed(key, feature, mask) for mask in
                 (dropped_fg, foreground_mask(attention, theta_bg), background_mask(attention, theta_bg))]
            state.setdefault("ca", []).append(contrastive_attention_loss(*z, self.margin))
        dropping = dropped_fg if self.ablation.dfg_mask else drop_mask(attention, theta_fg)
        return feature * select_map(torch.sigmoid(attention), dropping, self.hyper.drop_rate)

    def _embed(self, key: str, feature: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled, nonempty = masked_average(feature, mask)
        return self.embedding[key](pooled) * nonempty[:, None].to(pooled.dtype)

    def head(self, feature, labels, state):
        outputs = super().head(feature, labels, state)
        if state is not None:
            if self.embedding is not None:
                outputs["ca"] = torch.stack(state["ca"]).sum()
            if self.ablation.consistency and len(self.taps) > 1:
                outputs["fc"] = foreground_consistency_loss(state["attention"])
        return outputs

    def losses(self, outputs, targets):
        terms = super().losses(outputs, targets)
        for name in ("ca", "fc"):
            if name in outputs:
                terms[name] = self.weights[name] * outputs[name]
        return terms
