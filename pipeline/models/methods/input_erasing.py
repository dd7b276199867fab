"""Methods that change the training input: Hide-and-Seek and CutMix. Both use CAM's head."""

from __future__ import annotations

import math

import torch

from pipeline.models.backbones import Backbone
from pipeline.models.methods.base import CAM, Targets
from pipeline.settings.registry import CutmixConfig, HasConfig


class HaS(CAM):
    """Hide-and-Seek (Singh & Lee, ICCV 2017): the input is cut into grid_size x grid_size pixel
    patches and each is hidden (set to 0, the normalised mean colour) with probability drop_rate."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: HasConfig):
        super().__init__(backbone, num_classes, settings)
        self.grid_size = settings.grid_size
        self.drop_rate = settings.drop_rate

    def augment(self, images, labels):
        b, _, h, w = images.shape
        g = self.grid_size
        keep = torch.rand(b, 1, math.ceil(h / g), math.ceil(w / g), device=images.device) >= self.drop_rate
        keep = keep.repeat_interleave(g, dim=2).repeat_interleave(g, dim=3)[:, :, :h, :w]
        return images * keep.to(images.dtype), Targets(labels)


class CutMix(CAM):
    """CutMix (Yun et al., ICCV 2019): with probability prob, a box of area fraction 1 - lam,
    lam ~ Beta(beta, beta), is pasted from another image of the batch; the loss mixes both labels
    by the box's actual area."""

    def __init__(self, backbone: Backbone, num_classes: int, settings: CutmixConfig):
        super().__init__(backbone, num_classes, settings)
        self.beta = settings.beta
        self.prob = settings.prob

    def augment(self, images, labels):
        if torch.rand(()).item() >= self.prob:
            return images, Targets(labels)
        b, _, h, w = images.shape
        lam = torch.distributions.Beta(self.beta, self.beta).sample().item()
        ratio = math.sqrt(1 - lam)
        cut_h, cut_w = int(h * ratio), int(w * ratio)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        order = torch.randperm(b, device=images.device)
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[order, :, y0:y1, x0:x1]
        return mixed, Targets(labels, labels[order], 1 - (y1 - y0) * (x1 - x0) / (h * w))
