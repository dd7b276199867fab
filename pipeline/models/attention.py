"""The attention pieces of ADL and of the paper (Ki et al., ACCV 2020, Sec. 3), one function each.

Shapes: a feature map F is (B, C, H, W); an attention map A and every mask is (B, 1, H, W);
per-image thresholds are (B, 1, 1, 1). Masks are float tensors of 0 and 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NonLocalAttention(nn.Module):
    """Eq. 5: ``A = mean_C(softmax(f(x)^T g(x)) z(x))``, with f, g: 1x1 convs to C~ = C/2 channels (the
    paper leaves C~ open; C/2 is the non-local block of Wang et al.) and z: a 1x1 conv to C channels.
    Position i of A is ``sum_j softmax_j(f_i . g_j) mean_C(z_j)``.

    The channel mean is linear, so it is taken before the (HW x HW) product: mean_C(z(x)) is the 1x1
    conv with z's weights and bias averaged over output channels. f, g and that averaged z run as one
    1x1 conv of C~ + C~ + 1 outputs (one GEMM forward, one backward). Values and gradients are those
    of the formula as written; the one (B, HW, HW) tensor kept for the backward is the softmax.
    ``scaled_dot_product_attention`` would compute the same thing, but its fused kernels need values
    as wide as the keys (here 1 wide): it would run this same math, or C~ times more work on padding.

    Cost: f and g are two C x C/2 GEMMs per pixel, as much as a ResNet50 bottleneck block at layer4;
    ``benchmarks/train_speed.py`` prints the FLOP ratio ICL / CAM that this sets.
    """

    def __init__(self, channels: int):
        super().__init__()
        key_channels = max(1, channels // 2)
        self.f = nn.Conv2d(channels, key_channels, 1)
        self.g = nn.Conv2d(channels, key_channels, 1)
        self.z = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k = self.f.out_channels
        weight = torch.cat([self.f.weight, self.g.weight, self.z.weight.mean(0, keepdim=True)])
        bias = torch.cat([self.f.bias, self.g.bias, self.z.bias.mean(0, keepdim=True)])
        f, g, z_mean = F.conv2d(x, weight, bias).flatten(2).split([k, k, 1], dim=1)  # (B, C~, N) twice, (B, 1, N)
        similarity = torch.softmax(f.transpose(1, 2) @ g, dim=-1)  # (B, N, N), row i: weights over j
        return (z_mean @ similarity.transpose(1, 2)).view(b, 1, h, w)


def channel_mean_attention(feature: torch.Tensor) -> torch.Tensor:
    """ADL's attention: the feature map averaged over channels, accumulated and returned in float32
    (under autocast too: the thresholds and masks read from it are float32)."""
    return feature.mean(dim=1, keepdim=True, dtype=torch.float32)


def attention_thresholds(attention: torch.Tensor, gamma_fg: float, gamma_bg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: theta_fg = gamma_fg * max(A), theta_bg = gamma_bg * mean(A)."""
    theta_fg = gamma_fg * attention.amax(dim=(1, 2, 3), keepdim=True)
    theta_bg = gamma_bg * attention.mean(dim=(1, 2, 3), keepdim=True)
    return theta_fg, theta_bg


def dropped_foreground_mask(attention: torch.Tensor, theta_fg: torch.Tensor, theta_bg: torch.Tensor) -> torch.Tensor:
    """Eq. 1: M_dfg = 1[A < theta_fg] AND 1[A > theta_bg]: the object without its most
    discriminative part and without the background."""
    return ((attention < theta_fg) & (attention > theta_bg)).to(attention.dtype)


def foreground_mask(attention: torch.Tensor, theta_bg: torch.Tensor) -> torch.Tensor:
    """Eq. 2: M_fg = 1[A > theta_bg]."""
    return (attention > theta_bg).to(attention.dtype)


def background_mask(attention: torch.Tensor, theta_bg: torch.Tensor) -> torch.Tensor:
    """Eq. 2: M_bg = 1[A < theta_bg]."""
    return (attention < theta_bg).to(attention.dtype)


def drop_mask(attention: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """ADL's drop mask 1[A < theta]: the most discriminative part removed."""
    return (attention < theta).to(attention.dtype)


def select_map(importance: torch.Tensor, dropping: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """One draw per call (per batch, as ADL): the dropping mask with probability drop_rate, else the
    importance map sigmoid(A)."""
    coin = torch.rand((), device=importance.device) < drop_rate
    return torch.where(coin, dropping, importance)


def masked_average(feature: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked global average pooling: per image, the mean of F over the pixels where the mask is 1.

    Returns (B, C) features and (B,) bool "the mask is not empty" (an empty mask pools to zeros).
    """
    area = mask.sum(dim=(2, 3))  # (B, 1)
    total = (feature * mask).sum(dim=(2, 3))  # (B, C)
    nonempty = area[:, 0] > 0
    return total / area.clamp_min(1), nonempty


def contrastive_attention_loss(z_dfg: torch.Tensor, z_fg: torch.Tensor, z_bg: torch.Tensor, margin: float,
                               present: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: mean over images of max(0, d(z_dfg, z_fg) - d(z_dfg, z_bg) + m), d the L2 distance.
    z: (B, D) embeddings; ``present`` (B,) bool: the images whose three masks are all non-empty, the
    only ones the mean runs over (0 when there is none)."""
    positive = torch.linalg.vector_norm(z_dfg - z_fg, dim=1)
    negative = torch.linalg.vector_norm(z_dfg - z_bg, dim=1)
    hinge = F.relu(positive - negative + margin)
    if present is None:
        return hinge.mean()
    return torch.where(present, hinge, torch.zeros_like(hinge)).sum() / present.sum().clamp_min(1)


def foreground_consistency_loss(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 4 for every earlier layer i against the last (reference) layer j, summed over i:
    ||A_i - A_j||_2^2 per pixel, i.e. the mean squared difference over the map's pixels (PyTorch's
    MSELoss), averaged over images. A_j is resized bilinearly (half-pixel centres) to A_i's size and
    detached: no gradient reaches the reference layer.

    Per pixel, not summed over the map: the sum grows with the map's area (100 pixels at 80 px input,
    784 at 224 px) and with the unnormalised maps' scale; on the default benchmark at lr 0.01 it
    drove the loss from 3.95 in epoch 1 to 7.54 in epoch 3 (L_fc 6.39; README, "The default benchmark")."""
    *earlier, last = attentions
    reference = last.detach()
    total = last.new_zeros(())
    for attention in earlier:
        target = reference
        if target.shape[-2:] != attention.shape[-2:]:
            target = F.interpolate(reference, size=attention.shape[-2:], mode="bilinear", align_corners=False)
        total = total + (attention - target).pow(2).flatten(1).mean(dim=1).mean()
    return total
