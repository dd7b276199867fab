"""The paper's method (Ki et al., ACCV 2020, Sec. 3): in-sample contrastive learning and
consistent attention, at the taps where ADL attaches."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.attention import (
    NonLocalAttention,
    attention_figures,
    attention_thresholds,
    background_mask,
    channel_mean_attention,
    contrastive_attention_loss,
    drop_mask,
    dropped_foreground_mask,
    foreground_consistency_loss,
    foreground_mask,
    is_empty,
    masked_average,
    reduce_taps,
    select_map,
    unit_embedding,
)
from pipeline.models.backbones import Backbone
from pipeline.models.methods.base import CAM
from pipeline.settings.registry import IclConfig


def _module_key(tap: str) -> str:
    """Tap names such as 'layer3.0' as ModuleDict keys (no dots allowed)."""
    return tap.replace(".", "_")


class ICL(CAM):
    """In-sample contrastive learning and consistent attention (the paper, Sec. 3).

    At each tap a non-local attention block (Eq. 5) gives A; the feature is multiplied by M_dfg
    (Eq. 1; probability drop_rate) or by sigmoid(A). L_ca (Eq. 3) compares masked-GAP features of F
    under M_dfg, M_fg and M_bg (Eq. 2) in a 1x1-conv embedding; L_fc (Eq. 4) ties every earlier tap's
    A to the last tap's. Total loss Eq. 6: L_cls + ca_weight L_ca + fc_weight L_fc.

    The 1x1-conv embedding then masked GAP is computed as masked GAP then a linear layer (equal,
    the embedding being affine). An image where M_dfg, M_fg or M_bg is empty has no anchor, positive
    or negative: it is left out of Eq. 3's mean. The ablation switches of Table 2
    replace the non-local block by the channel mean, or M_dfg (in the forward only; L_ca keeps its
    definition) by ADL's drop mask, or drop L_ca or L_fc.

    Where the paper is silent, ``settings`` chooses (registry.FREE_CHOICES; README, "The paper's free
    choices"): A's sign and the block's similarity (:class:`NonLocalAttention`); the block's start
    (``attention_init``: the reference's initialisation of the network, or :meth:`NonLocalAttention.start_as_channel_mean`);
    L_ca's embeddings raw or on the unit sphere (``embedding_norm``); what an image whose dropping
    mask is empty gets when that mask is drawn (``empty_dfg``: the mask, i.e. a zero feature, or its
    importance map sigmoid(A)); L_ca and L_fc summed or averaged over taps (``tap_reduction``); Eq. 4
    over pixels summed, averaged or on the reference's foreground (``fc_pixels``), on the maps as
    they are or each divided by its maximum (``fc_scale``); the blocks' and
    embeddings' learning rate (``attention_lr``).

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
        self.settings = settings
        self.hyper = settings.hyper.of(backbone.name)
        self.ablation = settings.ablation
        self.weights = {"ca": settings.ca_weight, "fc": settings.fc_weight}
        channels = {_module_key(t): backbone.channels[t] for t in self.taps}
        nonnegative = settings.attention_sign == "nonnegative"
        self.attention = nn.ModuleDict({k: NonLocalAttention(c, nonnegative, settings.similarity_scale,
                                                             settings.similarity_temperature)
                                        for k, c in channels.items()}) \
            if self.ablation.non_local else None
        self.embedding = nn.ModuleDict({k: nn.Linear(c, settings.embedding_dim) for k, c in channels.items()}) \
            if self.ablation.contrastive else None

    def initialise(self):
        if self.attention is not None and self.settings.attention_init == "channel_mean":
            for block in self.attention.values():
                block.start_as_channel_mean()

    def at_backbone_rate(self, name):
        return self.settings.attention_lr == "backbone" and name.startswith(("attention.", "embedding."))

    def _attention(self, tap: str, feature: torch.Tensor) -> torch.Tensor:
        """A at a tap, float32 (under autocast too: Eq. 1's thresholds and masks in float32)."""
        if self.attention is None:
            return channel_mean_attention(feature)
        return self.attention[_module_key(tap)](feature).float()

    def attention_maps(self, tap, feature):
        if tap not in self.taps:
            return {}
        maps = {"attention": self._attention(tap, feature)}
        if self.attention is not None:  # the channel mean beside the block's A (without the block, A is the channel mean)
            maps["channel_mean"] = channel_mean_attention(feature)
        return maps

    def at_tap(self, tap, feature, state):
        if tap not in self.taps:
            return feature
        attention = self._attention(tap, feature)
        theta_fg, theta_bg = attention_thresholds(attention, self.hyper.gamma_fg, self.hyper.gamma_bg)
        dropped_fg = dropped_foreground_mask(attention, theta_fg, theta_bg)
        masks = (dropped_fg, foreground_mask(attention, theta_bg), background_mask(attention, theta_bg))
        state.setdefault("attention", []).append(attention)
        dropping = dropped_fg if self.ablation.dfg_mask else drop_mask(attention, theta_fg)
        figures = attention_figures(attention, dropping, theta_fg)
        figures.update(fg_empty=is_empty(masks[1]).float().mean(), bg_empty=is_empty(masks[2]).float().mean())
        if self.embedding is not None:
            pooled = [masked_average(feature, mask) for mask in masks]
            z = [self.embedding[_module_key(tap)](features) for features, _ in pooled]
            figures["embedding_norm"] = torch.stack(z).detach().norm(dim=-1).mean()
            if self.settings.embedding_norm == "l2":
                z = [unit_embedding(e) for e in z]
            present = pooled[0][1] & pooled[1][1] & pooled[2][1]
            state.setdefault("ca", []).append(contrastive_attention_loss(*z, self.settings.margin, present))
        state.setdefault("figures", {})[tap] = figures
        importance = torch.sigmoid(attention)
        if self.settings.empty_dfg == "importance":
            dropping = torch.where(is_empty(dropping), importance, dropping)
        selected = select_map(importance, dropping, self.hyper.drop_rate)
        return feature * selected.to(feature.dtype)

    def head(self, feature, labels, state):
        outputs = super().head(feature, labels, state)
        if state is not None:
            if self.embedding is not None:
                outputs["ca"] = reduce_taps(state["ca"], self.settings.tap_reduction)
            if self.ablation.consistency and len(self.taps) > 1:
                outputs["fc"] = foreground_consistency_loss(state["attention"], self.settings.fc_pixels,
                                                            self.settings.tap_reduction, self.hyper.gamma_bg,
                                                            self.settings.fc_scale)
        return outputs

    def losses(self, outputs, targets):
        terms = super().losses(outputs, targets)
        for name in ("ca", "fc"):
            if name in outputs:
                terms[name] = self.weights[name] * outputs[name]
        return terms
