"""SPG (Zhang et al., ECCV 2018): self-produced guidance from the CAM supervises auxiliary branches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.backbones import Backbone, conv_relu
from pipeline.models.methods.base import CAM, normalize_maps
from pipeline.settings.registry import SpgConfig

C_WIDTH = 512  # branch C's hidden channels on every backbone (SPG_C in wsol/*.py)
IGNORE = -1.0  # label of pixels that are neither confident foreground nor background
MIN_FOREGROUND = 30  # pixels; fewer above `high` and the foreground threshold falls to 0.7 * max (reference)


def guidance_mask(attention: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """SPG's pixel labels from a (B, H, W) map in [0, 1]: 1 above ``high`` (or above 0.7 * max where
    fewer than MIN_FOREGROUND pixels are), 0 below ``low``, IGNORE between."""
    foreground = attention > high
    few = foreground.flatten(1).sum(dim=1) < MIN_FOREGROUND
    fallback = attention > 0.7 * attention.flatten(1).amax(dim=1)[:, None, None]
    foreground = torch.where(few[:, None, None], fallback, foreground)
    mask = torch.full_like(attention, IGNORE)
    mask[foreground] = 1.0
    mask[attention < low] = 0.0
    return mask


def guided_bce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B, 1, h, w) logits, upsampled bilinearly to the mask's (B, H, W)
    size, over the pixels the mask does not ignore; 0 when it ignores all."""
    logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    labelled = mask != IGNORE
    if not labelled.any():
        return logits.sum() * 0
    return F.binary_cross_entropy_with_logits(logits[labelled], mask[labelled])


class SPG(CAM):
    """Branch B1 (at the first tap) and B2 (at the second), each a 3x3 conv and a shared 3x3 + 1x1
    head ``branch_width`` wide, and branch C (on the final map, 3x3 to 512 then 1x1) predict
    one-channel maps; B2 learns the CAM's confident pixels, B1 learns B2's, C learns the mean of
    B1's and B2's. ``thresholds`` gives (high, low) for the three. The CAM is CAM's; the branches run
    only in training. The reference's taps: VGG16 pool4 (after conv4_3 and its pool) and conv5_3,
    ResNet50 layer3.0 and layer3.5, InceptionV3 pool_5d and Mixed_6d (InceptionSpg feeds SPG_B_2a
    Mixed_6d's output, not Mixed_6e's)."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: SpgConfig):
        super().__init__(backbone, num_classes, settings)
        key = f"method_settings.spg.taps.{backbone.name}"
        taps = backbone.tap_order(settings.taps.of(backbone.name), key)
        if len(taps) != 2:
            raise ValueError(f"{key}: SPG takes exactly two taps (B1's, B2's), got {settings.taps.of(backbone.name)}")
        self.tap_b1, self.tap_b2 = taps
        self.thresholds = settings.thresholds
        width = settings.branch_width.of(backbone.name)
        self.branch_b1 = nn.Sequential(*conv_relu(backbone.channels[self.tap_b1], width))
        self.branch_b2 = nn.Sequential(*conv_relu(backbone.channels[self.tap_b2], width))
        self.branch_b_shared = nn.Sequential(*conv_relu(width, width), nn.Conv2d(width, 1, 1))
        self.branch_c = nn.Sequential(*conv_relu(backbone.out_channels, C_WIDTH), nn.Conv2d(C_WIDTH, 1, 1))

    def at_tap(self, tap, feature, state):
        if tap == self.tap_b1:
            state["logits_b1"] = self.branch_b_shared(self.branch_b1(feature))
        elif tap == self.tap_b2:
            state["logits_b2"] = self.branch_b_shared(self.branch_b2(feature))
        return feature

    def head(self, feature, labels, state):
        outputs = super().head(feature, labels, state)
        if state is not None:
            classes = labels if labels is not None else outputs["logits"].argmax(dim=1)
            size = state["input_size"]
            cam = self.class_maps(feature.detach(), classes)[:, None]
            outputs["attention"] = normalize_maps(F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0])
            outputs["logits_b1"], outputs["logits_b2"] = state["logits_b1"], state["logits_b2"]
            outputs["logits_c"] = self.branch_c(feature)
        return outputs

    def losses(self, outputs, targets):
        (h1, l1), (h2, l2), (h3, l3) = self.thresholds
        size = outputs["attention"].shape[-2:]

        def upsampled_sigmoid(logits):
            return torch.sigmoid(F.interpolate(logits.detach(), size=size, mode="bilinear", align_corners=False))[:, 0]

        b1, b2 = upsampled_sigmoid(outputs["logits_b1"]), upsampled_sigmoid(outputs["logits_b2"])
        terms = super().losses(outputs, targets)
        terms["spg_b2"] = guided_bce(outputs["logits_b2"], guidance_mask(outputs["attention"], h1, l1))
        terms["spg_b1"] = guided_bce(outputs["logits_b1"], guidance_mask(b2, h2, l2))
        terms["spg_c"] = guided_bce(outputs["logits_c"], guidance_mask((b1 + b2) / 2, h3, l3))
        return terms
