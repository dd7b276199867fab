"""Localizing objects in any images with an exported model (``wsol localize``)."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms

from pipeline.data.images import ImageReadError, load_rgb
from pipeline.formats.export_folder import load_exported
from pipeline.metrics import RESIZE_LENGTH
from pipeline.report.figures import overlay, predicted_box, save_picture


@dataclass(frozen=True)
class Localization:
    image: str
    label: int
    class_name: str
    score: float  # softmax probability of the predicted class
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's own pixels
    overlay: str | None

    def to_dict(self) -> dict:
        return {"image": self.image, "class": self.label, "class_name": self.class_name, "score": round(self.score, 6),
                "box": dict(zip(("x0", "y0", "x1", "y1"), self.box, strict=False)), "overlay": self.overlay}


def to_image_pixels(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """A box on the 224x224 CAM grid (inclusive pixel corners), as the image pixels it covers: never
    empty, even where one image pixel spans several grid cells."""
    x0, y0, x1, y1 = box
    return (x0 * width // RESIZE_LENGTH, y0 * height // RESIZE_LENGTH,
            min(width, math.ceil((x1 + 1) * width / RESIZE_LENGTH)) - 1,
            min(height, math.ceil((y1 + 1) * height / RESIZE_LENGTH)) - 1)


def overlay_names(images: list[Path]) -> list[str]:
    """One overlay file name per image, all different and the same for the same inputs: ``<stem>_cam.png``;
    where stems collide, the path relative to the inputs' common parent, separators as ``__``
    (``a/0005.png`` -> ``a__0005_cam.png``); a counter where names still collide (the same file twice)."""
    if not images:
        return []
    stems = Counter(path.stem for path in images)
    absolute = [Path(os.path.abspath(path)) for path in images]
    parent = Path(os.path.commonpath([str(path.parent) for path in absolute]))
    names, used = [], set()
    for path, full in zip(images, absolute, strict=False):
        base = "__".join(full.with_suffix("").relative_to(parent).parts) if stems[path.stem] > 1 else path.stem
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}_{count}"
        used.add(name)
        names.append(f"{name}_cam.png")
    return names


def localize(images: list[Path], model: Path, out: Path | None = None, threshold: float | None = None
             ) -> tuple[list[Localization], list[str]]:
    """(localizations, errors): the predicted class's CAM thresholded at ``threshold`` (default: the
    model's val-optimal one), box of its largest contour; an unreadable image is an error, not a stop."""
    network, meta = load_exported(model)
    size = meta.input_size
    prepare = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                  transforms.Normalize(meta.mean, meta.std)])
    tau = meta.cam_threshold if threshold is None else threshold
    found, errors = [], []
    for path, name in zip(images, overlay_names(images), strict=False):
        try:
            image = load_rgb(path)
        except ImageReadError as error:
            errors.append(str(error))
            continue
        with torch.no_grad():
            logits, cams = network(prepare(image)[None], torch.tensor([-1]))
        probabilities = torch.softmax(logits[0], dim=0)
        label = int(probabilities.argmax())
        cam = cams[0].numpy()
        box = to_image_pixels(predicted_box(cam, tau), *image.size)
        class_name, score = meta.class_names[label], float(probabilities[label])
        picture = None
        if out is not None:
            drawn = overlay(np.asarray(image), cam, predicted=box, at_image_size=True, caption=f"{class_name} {score:.2f}")
            picture = str(save_picture(out / name, drawn))
        found.append(Localization(str(path), label, class_name, score, box, picture))
    return found, errors
