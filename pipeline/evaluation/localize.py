"""Localizing objects in any images with an exported model (``wsol localize``)."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision import transforms

from pipeline.data.images import ImageReadError, load_rgb
from pipeline.formats.export_folder import load_exported
from pipeline.metrics import RESIZE_LENGTH
from pipeline.report.figures import FONT, PREDICTED_COLOUR, overlay, predicted_box, save_picture

DISPLAY_SIDE = 384  # px: overlays of smaller images are upscaled until their shorter side reaches this
DISPLAY_LIMIT = 4096  # px: ... unless their longer side would pass this (a 3x2000 image is not made 384x256000)
MODEL_THRESHOLD = "model"  # threshold_source without --threshold: export.json's cam_threshold (README)
OPTION_THRESHOLD = "--threshold"


@dataclass(frozen=True)
class Localization:
    image: str
    label: int
    class_name: str
    score: float  # softmax probability of the predicted class
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's own pixels
    overlay: str | None
    cam_threshold: float  # tau in [0, 1], relative to the CAM's peak, that cut the box
    threshold_source: str  # MODEL_THRESHOLD or OPTION_THRESHOLD

    def to_dict(self) -> dict:
        return {"image": self.image, "class": self.label, "class_name": self.class_name, "score": round(self.score, 6),
                "box": dict(zip(("x0", "y0", "x1", "y1"), self.box, strict=False)),
                "cam_threshold": round(self.cam_threshold, 6), "threshold_source": self.threshold_source,
                "overlay": self.overlay}


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


def display_factor(width: int, height: int) -> int:
    """The integer factor (>= 1) an overlay of a width x height px image is upscaled by: the smallest that
    brings its shorter side to DISPLAY_SIDE px, but none that takes its longer side past DISPLAY_LIMIT px."""
    return max(1, min(math.ceil(DISPLAY_SIDE / min(width, height)), DISPLAY_LIMIT // max(width, height)))


def boxed_overlay(image: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int], factor: int) -> np.ndarray:
    """The (H*f, W*f, 3) uint8 RGB overlay of an (H, W, 3) image, upscaled by ``factor`` f (nearest, so
    pixels stay square), under its (224, 224) CAM, with ``box`` (inclusive corners in the image's pixels)
    as a green frame drawn *inside* the f x f blocks of the pixels it covers: never cut by the image's edge."""
    large = np.repeat(np.repeat(image[..., :3], factor, axis=0), factor, axis=1)
    out = overlay(large, cam, at_image_size=True)
    x0, y0, x1, y1 = (corner * factor for corner in box)
    x1, y1 = x1 + factor, y1 + factor  # exclusive
    thickness = max(1, round(min(out.shape[:2]) / 112))  # figures.overlay's: 3 px at 384 px
    for rows, columns in ((slice(y0, y1), slice(x0, x0 + thickness)), (slice(y0, y1), slice(x1 - thickness, x1)),
                          (slice(y0, y0 + thickness), slice(x0, x1)), (slice(y1 - thickness, y1), slice(x0, x1))):
        out[rows, columns] = PREDICTED_COLOUR
    return out


def with_caption(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 below a black strip with ``text`` in white, wrapped at spaces to the
    width: (h + H, max(W, w), 3), the picture at the bottom left, unchanged (a word wider than the
    picture widens the canvas, black right of the picture). Text about 3.4 % of the shorter side high."""
    height, width = picture.shape[:2]
    scale = max(0.5, min(height, width) / 640)  # 0.6 (about 13 px) at 384 px
    thickness = max(1, round(scale * 1.6))
    pad = max(2, round(8 * scale))
    lines: list[str] = []
    for word in text.split():
        wider = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(wider, FONT, scale, thickness)[0][0] <= width - 2 * pad:
            lines[-1] = wider
        else:
            lines.append(word)
    sizes = [cv2.getTextSize(line, FONT, scale, thickness) for line in lines]
    line_height = max(h + baseline for (_, h), baseline in sizes)
    strip = pad + len(lines) * (line_height + pad)
    canvas = np.zeros((strip + height, max(width, max(w for (w, _), _ in sizes) + 2 * pad), 3), np.uint8)
    canvas[strip:, :width] = picture
    for k, (line, ((_, h), _)) in enumerate(zip(lines, sizes, strict=False)):
        cv2.putText(canvas, line, (pad, pad + k * (line_height + pad) + h), FONT, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return canvas


def localize(images: list[Path], model: Path, out: Path | None = None, threshold: float | None = None
             ) -> tuple[list[Localization], list[str]]:
    """(localizations, errors): the predicted class's CAM thresholded at ``threshold`` (default: the
    model's val-optimal one), box of its largest contour; an unreadable image is an error, not a stop.
    With ``out``, one overlay per image there: :func:`boxed_overlay` upscaled by :func:`display_factor`,
    under a caption strip (:func:`with_caption`) with the class and its probability."""
    network, meta = load_exported(model)
    size = meta.input_size
    prepare = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                  transforms.Normalize(meta.mean, meta.std)])
    tau, source = (meta.cam_threshold, MODEL_THRESHOLD) if threshold is None else (threshold, OPTION_THRESHOLD)
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
            drawn = boxed_overlay(np.asarray(image), cam, box, display_factor(*image.size))
            picture = str(save_picture(out / name, with_caption(drawn, f"{class_name} {score:.2f}")))
        found.append(Localization(str(path), label, class_name, score, box, picture, tau, source))
    return found, errors
