"""The paper's method (Ki et al., ACCV 2020, Sec. 3): in-sample contrastive learning and
consistent attention, at the taps where ADL attaches."""

from __future__ import annotations

import torch
from torch import nn

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
from pipeline.registry import IclConfig


def _module_key(tap: str) -> str:
    """Tap names such as 'layer3.0' as ModuleDict keys (no dots allowed)."""
    return tap.replace(".", "_")


class ICL(CAM):
    """In-sample contrastive learning and consistent attention (the paper, Sec. 3).

    At each tap a non-local attention block (Eq. 5) gives A; the feature is multiplied by M_dfg
    (Eq. 1; probability drop_rate) or by sigmoid(A). L_ca (Eq. 3) compares masked-GAP features of F
    under M_dfg, M_fg and M_bg (Eq. 2) in a 1x1-conv embedding, summed over taps; L_fc (Eq. 4) ties
    every earlier tap's A to the last tap's. Total loss Eq. 6: L_cls + ca_weight L_ca + fc_weight L_fc.

    The 1x1-conv embedding then masked GAP is computed as masked GAP then a linear layer (equal,
    the embedding being affine). An image where M_dfg, M_fg or M_bg is empty has no anchor, positive
    or negative: it is left out of Eq. 3's mean. The ablation switches of Table 2
    replace the non-local block by the channel mean, or M_dfg (in the forward only; L_ca keeps its
    definition) by ADL's drop mask, or drop L_ca or L_fc.

    Under mixed precision A is taken to float32 before anything reads it: its thresholds, the three
    masks, the importance map and L_fc are float32 whatever autocast gives the block.
    """

    may_skip_parameters = True  # when M_dfg is drawn, the last tap's block gets no gradient

    def __init__(self, backbone: Backbone, num_classes: int, settings: IclConfig):
        super().__init__(backbone, num_classes, settings)
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
        attention = attention.float()  # under autocast too: Eq. 1's thresholds and masks in float32
        theta_fg, theta_bg = attention_thresholds(attention, self.hyper.gamma_fg, self.hyper.gamma_bg)
        dropped_fg = dropped_foreground_mask(attention, theta_fg, theta_bg)
        state.setdefault("attention", []).append(attention)
        if self.embedding is not None:
            masks = (dropped_fg, foreground_mask(attention, theta_bg), background_mask(attention, theta_bg))
            pooled = [masked_average(feature, mask) for mask in masks]
            z = [self.embedding[key](features) for features, _ in pooled]
            present = pooled[0][1] & pooled[1][1] & pooled[2][1]
            state.setdefault("ca", []).append(contrastive_attention_loss(*z, self.margin, present))
        dropping = dropped_fg if self.ablation.dfg_mask else drop_mask(attention, theta_fg)
        selected = select_map(torch.sigmoid(attention), dropping, self.hyper.drop_rate)
        return feature * selected.to(feature.dtype)

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
