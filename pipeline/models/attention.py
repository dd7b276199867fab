"""The attention pieces of ADL and of the paper (Ki et al., ACCV 2020, Sec. 3), one function each.

Shapes: a feature map F is (B, C, H, W); an attention map A and every mask is (B, 1, H, W);
per-image thresholds are (B, 1, 1, 1). Masks are float tensors of 0 and 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UNIT_EPS = 1e-6  # below this norm a vector is divided by it instead: the normalisation's gradient stays <= 1e6


class NonLocalAttention(nn.Module):
    """Eq. 5: ``A = mean_C(softmax(f(x)^T g(x)) z(x))``, with f, g: 1x1 convs to C~ = C/2 channels (the
    paper leaves C~ open; C/2 is the non-local block of Wang et al.) and z: a 1x1 conv to C channels.
    Position i of A is ``sum_j softmax_j(sim(f_i, g_j)) zbar_j``, zbar = mean_C(z).

    Two choices the paper leaves open (``method_settings.icl``, README "The paper's free choices"):

    * ``nonnegative``: zbar goes through a ReLU, so A, a softmax-weighted average of zbar, is >= 0. The
      paper calls A an "intensity" and thresholds it at gamma_fg max(A) and gamma_bg mean(A) (Sec. 4.1),
      as ADL does its channel mean of post-ReLU features; on a map of free sign those thresholds no
      longer mean "the top part" and "above average". False: the formula as written.
    * ``similarity``, sim(f_i, g_j): ``"none"``, the dot product f_i . g_j as written; ``"sqrt_key"``,
      f_i . g_j / sqrt(C~) (the scaled dot product of Vaswani et al.); ``"cosine"``, cos(f_i, g_j) / tau
      (the similarity of the paper's contrastive sources, SimCLR and MoCo, at their temperature). A
      dot product favours the positions whose g is long over those that resemble i, and A, an
      average of zbar, flattens; with cosine and g = f each position is most similar to itself.

    The channel mean is linear, so it is taken before the (HW x HW) product: mean_C(z(x)) is the 1x1
    conv with z's weights and bias averaged over output channels. f, g and that averaged z run as one
    1x1 conv of C~ + C~ + 1 outputs (one GEMM forward, one backward). Values and gradients are those
    of the formula as written; the one (B, HW, HW) tensor kept for the backward is the softmax.
    ``scaled_dot_product_attention`` would compute the same thing, but its fused kernels need values
    as wide as the keys (here 1 wide): it would run this same math, or C~ times more work on padding.

    Cost: f and g are two C x C/2 GEMMs per pixel, as much as a ResNet50 bottleneck block at layer4;
    ``benchmarks/train_speed.py`` prints the FLOP ratio ICL / CAM that this sets.
    """

    def __init__(self, channels: int, nonnegative: bool = False, similarity: str = "none", temperature: float = 0.1):
        super().__init__()
        key_channels = max(1, channels // 2)
        self.f = nn.Conv2d(channels, key_channels, 1)
        self.g = nn.Conv2d(channels, key_channels, 1)
        self.z = nn.Conv2d(channels, channels, 1)
        self.nonnegative = nonnegative
        self.cosine = similarity == "cosine"
        self.logit_scale = {"none": 1.0, "sqrt_key": key_channels ** -0.5, "cosine": 1 / temperature}[similarity]

    @torch.no_grad()
    def start_as_channel_mean(self) -> None:
        """z = identity (no bias) and g = f: at step 0, zbar is the channel mean of x (ADL's attention)
        and A_i its average over the positions j weighted by softmax_j(sim(f_i, f_j)), the channel
        mean smoothed over positions whose features resemble i's. f keeps its initialisation."""
        assert self.z.bias is not None and self.f.bias is not None and self.g.bias is not None  # built with biases
        channels = self.z.in_channels
        self.z.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        self.z.bias.zero_()
        self.g.weight.copy_(self.f.weight)
        self.g.bias.copy_(self.f.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> A (B, 1, H, W)."""
        b, _, h, w = x.shape
        k = self.f.out_channels
        weight = torch.cat([self.f.weight, self.g.weight, self.z.weight.mean(0, keepdim=True)])
        bias = torch.cat([self.f.bias, self.g.bias, self.z.bias.mean(0, keepdim=True)])  # type: ignore[list-item,union-attr]  # convs with bias
        f, g, z_mean = F.conv2d(x, weight, bias).flatten(2).split([k, k, 1], dim=1)  # (B, C~, N) twice, (B, 1, N)
        if self.nonnegative:
            z_mean = F.relu(z_mean)
        if self.cosine:
            f, g = F.normalize(f, dim=1, eps=UNIT_EPS), F.normalize(g, dim=1, eps=UNIT_EPS)
        similarity = torch.softmax(self.logit_scale * (f.transpose(1, 2) @ g), dim=-1)  # (B, N, N), row i: weights over j
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


def is_empty(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) mask -> (B, 1, 1, 1) bool: no pixel is 1."""
    return mask.amax(dim=(1, 2, 3), keepdim=True) == 0


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


def unit_embedding(z: torch.Tensor) -> torch.Tensor:
    """(B, D) embeddings -> each divided by its L2 norm (by UNIT_EPS when the norm is smaller)."""
    return F.normalize(z, dim=1, eps=UNIT_EPS)


def contrastive_attention_loss(z_dfg: torch.Tensor, z_fg: torch.Tensor, z_bg: torch.Tensor, margin: float,
                               present: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: mean over images of max(0, d(z_dfg, z_fg) - d(z_dfg, z_bg) + m), d the L2 distance.
    z: (B, D) embeddings; ``present`` (B,) bool: the images whose three masks are all non-empty, the
    only ones the mean runs over (0 when there is none). On unit embeddings d is in [0, 2], so the
    margin m = 1 asks the anchor to be nearer its positive than its negative by half their largest
    distance; on raw ones the hinge grows with the embedding's scale."""
    positive = torch.linalg.vector_norm(z_dfg - z_fg, dim=1)
    negative = torch.linalg.vector_norm(z_dfg - z_bg, dim=1)
    hinge = F.relu(positive - negative + margin)
    if present is None:
        return hinge.mean()
    return torch.where(present, hinge, torch.zeros_like(hinge)).sum() / present.sum().clamp_min(1)


MAX_EPS = 1e-6  # a map whose maximum is below this is divided by it instead (scale "max")


def foreground_consistency_loss(attentions: list[torch.Tensor], pixels: str = "mean", taps: str = "sum",
                                gamma_bg: float = 1.0, scale: str = "raw") -> torch.Tensor:
    """Eq. 4, ||A_i - A_j||_2^2, for every earlier layer i against the last (reference) layer j, per
    image, averaged over images; over the earlier layers summed (``taps="sum"``) or averaged ("mean").
    A_j is resized bilinearly (half-pixel centres) to A_i's size and detached: no gradient reaches the
    reference layer.

    ``scale``: "raw" compares the maps as they are, so L_fc also asks A_i to take A_j's magnitude,
    which differs from layer to layer (on the default benchmark at step 0 the mean A of the first tap
    is 2.4x the last's, 0.40 against 0.17, and that mismatch is most of L_fc); "max" divides each map
    by its own maximum over the map (a detached denominator, at least MAX_EPS), so L_fc compares where each map is high
    relative to its peak, what Eq. 1's thresholds read, and leaves each tap its own scale.

    ``pixels``:

    * "sum": the squared L2 norm as written, summed over A_i's pixels. It grows with the map's area
      (100 pixels at 80 px input, 784 at 224 px) and the maps' scale: on the default benchmark at lr
      0.01 it drove the loss from 3.95 in epoch 1 to 7.54 in epoch 3 (README, "The default benchmark").
    * "mean": per pixel (PyTorch's MSELoss).
    * "foreground": per pixel over the reference's M_fg only (Eq. 2 on the resized A_j: A_j > gamma_bg
      mean(A_j)): the early map is pulled to the late one where the late one sees the object (the
      paper's aim, Sec. 3.3, "boosts activations in the object"), its background left to L_ca. An
      image whose reference M_fg is empty adds 0."""
    *earlier, last = attentions
    if scale == "max":
        earlier = [a / a.detach().amax(dim=(1, 2, 3), keepdim=True).clamp_min(MAX_EPS) for a in earlier]
        last = last / last.amax(dim=(1, 2, 3), keepdim=True).clamp_min(MAX_EPS)
    reference = last.detach()
    per_tap = []
    for attention in earlier:
        target = reference
        if target.shape[-2:] != attention.shape[-2:]:
            target = F.interpolate(reference, size=attention.shape[-2:], mode="bilinear", align_corners=False)
        squared = (attention - target).pow(2)
        if pixels == "sum":
            per_image = squared.sum(dim=(1, 2, 3))
        elif pixels == "mean":
            per_image = squared.mean(dim=(1, 2, 3))
        else:
            inside = foreground_mask(target, gamma_bg * target.mean(dim=(1, 2, 3), keepdim=True))
            per_image = (squared * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3)).clamp_min(1)
        per_tap.append(per_image.mean())
    return reduce_taps(per_tap, taps)


def reduce_taps(values: list[torch.Tensor], how: str) -> torch.Tensor:
    """Scalar loss terms of several taps -> their sum ("sum") or mean ("mean")."""
    stacked = torch.stack(values)
    return stacked.sum() if how == "sum" else stacked.mean()


# --------------------------------------------------------------------------------- diagnostics

def spatial_variation(attention: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B,): the standard deviation of A over its pixels divided by the mean of |A| (the
    coefficient of variation for A >= 0); 0 for a map that is 0 everywhere. A flat map gives 0."""
    flat = attention.flatten(1)
    return flat.std(dim=1, correction=0) / flat.abs().mean(dim=1).clamp_min(torch.finfo(flat.dtype).tiny)


def attention_figures(attention: torch.Tensor, dropping: torch.Tensor, theta_fg: torch.Tensor) -> dict[str, torch.Tensor]:
    """What one tap's attention did in a batch, as detached scalars (shares in [0, 1]): ``negative``,
    pixels with A < 0; ``fg_above_max``, images whose theta_fg exceeds max(A) (no part counts as the
    most discriminative); ``drop_empty``, images whose dropping mask (M_dfg, or ADL's drop mask) is
    empty; ``drop_area``, the share of pixels that mask keeps, mean over images; ``variation``, A's
    spatial_variation, mean over images."""
    with torch.no_grad():
        return {"negative": (attention < 0).float().mean(),
                "fg_above_max": (theta_fg > attention.amax(dim=(1, 2, 3), keepdim=True)).float().mean(),
                "drop_empty": is_empty(dropping).float().mean(),
                "drop_area": dropping.mean(),
                "variation": spatial_variation(attention).mean()}
