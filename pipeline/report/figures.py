"""Pictures a researcher looks at: CAMs over images with their boxes, and BoxAcc curves."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.data.loading import IMAGENET_MEAN, IMAGENET_STD
from pipeline.data.metadata import Metadata
from pipeline.metrics import BoxResult
from pipeline.metrics.contour_boxes import largest_contour_box
from pipeline.metrics.conventions import best_iou, integer_thresholds, quantise, rescale_boxes
from pipeline.report.colours import method_colour
from pipeline.settings.registry import METHODS

GT_COLOUR = (220, 30, 30)  # RGB: ground truth red
PREDICTED_COLOUR = (30, 200, 30)  # predicted green, as in the paper's figures
FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_SCALE = 0.5  # grid labels: about 11 px high
LABEL_PAD = 6  # px of white around a grid label

# label, tau values, y values (%), matplotlib style, colour (pipeline/report/colours.py; None: matplotlib's next)
Curve = tuple[str, Sequence[float], Sequence[float], str, str | None]


def to_rgb(images: torch.Tensor) -> np.ndarray:
    """Normalised (B, 3, H, W) tensors -> (B, H, W, 3) uint8 RGB."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (images.detach().cpu().float() * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def predicted_box(cam: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """The box of the largest contour of a (224, 224) CAM in [0, 1] thresholded at tau, with the
    protocol's quantisation and cut; (0, 0, 0, 0) when nothing is above it."""
    quantised = quantise(cam[None])
    cut = integer_thresholds(np.array([threshold]), quantised)[0, 0]
    return largest_contour_box(quantised[0], int(cut))


def overlay(image: np.ndarray, cam: np.ndarray, gt_boxes: Sequence[Sequence[int]] = (),
            predicted: Sequence[int] | None = None, alpha: float = 0.5, *, at_image_size: bool = False,
            caption: str | None = None) -> np.ndarray:
    """An RGB image under its CAM as a jet heat map, with GT boxes (red) and a predicted box (green).
    By default at the CAM's size, boxes in that grid's pixels; with ``at_image_size`` at the image's own
    size (the heat map resized to it), boxes in the image's pixels. ``caption``: text drawn top left."""
    if at_image_size:
        height, width = image.shape[:2]
        base = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        side = cam.shape[0]
        base = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)  # type: ignore[assignment]
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 1 - alpha, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), alpha, 0)
    thickness = max(1, round(min(out.shape[:2]) / 112)) if at_image_size else 2
    for box in gt_boxes:
        cv2.rectangle(out, tuple(map(int, box[:2])), tuple(map(int, box[2:])), GT_COLOUR, thickness)
    if predicted is not None:
        cv2.rectangle(out, tuple(map(int, predicted[:2])), tuple(map(int, predicted[2:])), PREDICTED_COLOUR, thickness)
    if caption:
        _draw_caption(out, caption)
    return out


def _draw_caption(rgb: np.ndarray, text: str) -> None:
    """White text on a black band at the top left, its size following the image's (0.35 at 96 px and
    below, so that a small image still reads), shrunk to the width where the image allows; text too wide
    even then goes on two lines, split at its last space (a long class name above its score)."""
    height, width = rgb.shape[:2]
    scale = max(0.35, min(width, height) / 400)
    (text_width, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    if text_width > width - 4:
        scale = max(0.3, scale * (width - 4) / text_width)
    thickness = max(1, round(scale * 1.6))
    lines = [text]
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] > width - 4 and " " in text:
        lines = text.rsplit(" ", 1)
    sizes = [cv2.getTextSize(line, FONT, scale, thickness) for line in lines]
    line_height = max(h + baseline for (_, h), baseline in sizes)
    pad = max(1, round(line_height / 6))
    band = (max(w for (w, _), _ in sizes) + 2 * pad, len(lines) * (line_height + pad) + pad)
    cv2.rectangle(rgb, (0, 0), band, (0, 0, 0), cv2.FILLED)
    for k, (line, ((_, h), _baseline)) in enumerate(zip(lines, sizes, strict=False)):
        cv2.putText(rgb, line, (pad, pad + k * (line_height + pad) + h), FONT, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)


def grid(tiles: Sequence[np.ndarray], columns: int, gap: int = 4, *, row_labels: Sequence[str] = (),
         column_labels: Sequence[str] = ()) -> np.ndarray:
    """Equal-sized RGB tiles in rows of ``columns``, on white. ``row_labels`` (one per row) go in a
    margin on the left as wide as the longest; ``column_labels`` (one per column) in a margin on top,
    centred over their column, a label wider than its tile cut to '...' and its tail. Labels black."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    line = max((_label_size(label)[1] for label in (*row_labels, *column_labels)), default=0)
    left = max((_label_size(label)[0] + 2 * LABEL_PAD for label in row_labels), default=0)
    top = line + 2 * LABEL_PAD if column_labels else 0
    out = np.full((top + rows * (height + gap) - gap, left + columns * (width + gap) - gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = top + (k // columns) * (height + gap), left + (k % columns) * (width + gap)
        out[y:y + height, x:x + width] = tile
    for row, label in enumerate(row_labels):
        _put_label(out, label, LABEL_PAD, top + row * (height + gap) + (height + line) // 2)
    for column, label in enumerate(column_labels):
        label = _fitted(label, width - LABEL_PAD)
        _put_label(out, label, left + column * (width + gap) + (width - _label_size(label)[0]) // 2, LABEL_PAD + line)
    return out


def _label_size(text: str) -> tuple[int, int]:
    """(width, height) in px of a grid label, its baseline's descent included."""
    (width, height), baseline = cv2.getTextSize(text, FONT, LABEL_SCALE, 1)
    return width, height + baseline


def _fitted(text: str, width: int) -> str:
    """``text``, or where it is wider than ``width`` px as a grid label, '...' and its longest tail that
    fits: a path's tail after a '/' where one fits (its leading folders dropped), else any."""
    folders = [".../" + text[k + 1:] for k, char in enumerate(text) if char == "/"]
    tails = [text, *folders, *("..." + text[k:] for k in range(1, len(text) + 1)), ""]
    return next(tail for tail in tails if _label_size(tail)[0] <= width)


def _put_label(rgb: np.ndarray, text: str, x: int, bottom: int) -> None:
    """A grid label in black, its left end at ``x`` and its descent ending at row ``bottom``."""
    baseline = cv2.getTextSize(text, FONT, LABEL_SCALE, 1)[1]
    cv2.putText(rgb, text, (x, bottom - baseline), FONT, LABEL_SCALE, (0, 0, 0), 1, cv2.LINE_AA)


def save_picture(path: Path, rgb: np.ndarray) -> Path:
    """An RGB image as PNG, or JPEG (quality 90) when the name ends in .jpg/.jpeg: heat maps compress badly
    as PNG. The JPEG quality flag goes only to JPEG writes (OpenCV warns about it for any other format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags):
        raise OSError(f"{path}: cannot write the image")
    return path


def curve_panels(panels: Sequence[tuple[str, Sequence[Curve]]], path: Path, *, ylabel: str, title: str | None = None,
                 columns: int = 1) -> Path:
    """Curves against the CAM threshold tau in [0, 1], y in % (0-100), saved as PNG: one subplot per
    panel (its title, its curves, its legend in ``columns`` columns) side by side on a shared y axis,
    ``title`` above them all."""
    figure = Figure(figsize=(6.4 if len(panels) == 1 else 4.6 * len(panels), 4.2), dpi=100)
    FigureCanvasAgg(figure)
    for axes, (panel_title, curves) in zip(figure.subplots(1, len(panels), sharey=True, squeeze=False)[0], panels, strict=False):
        for label, x, y, style, colour in curves:
            axes.plot(x, y, style, label=label, color=colour)
        axes.set(xlabel="CAM threshold τ", title=panel_title, xlim=(0, 1), ylim=(0, 100))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", ncol=columns)
    figure.axes[0].set_ylabel(ylabel)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def boxacc_curves(results: dict[str, BoxResult], path: Path, title: str) -> Path:
    """BoxAcc(delta, tau) against tau, one line per (run, delta), saved as PNG; ``results`` keyed by
    method (its colour) or any other name."""
    styles = {30: ":", 50: "-", 70: "--"}
    curves = [(f"{name} IoU {delta}%", result.thresholds, curve, styles.get(delta, "-."),
               method_colour(name) if name in METHODS else None)
              for name, result in results.items() for delta, curve in result.multi_contour.boxacc.items()]
    return curve_panels([(title, curves)], path, ylabel="BoxAcc (%)", columns=max(1, len(results) // 4))  # type: ignore[list-item]


def gt_boxes_224(metadata: Metadata, image_ids) -> dict[str, np.ndarray]:
    """The images' GT boxes on the 224x224 CAM grid (none for a mask dataset)."""
    if metadata.boxes is None:
        return {}
    return {i: rescale_boxes(metadata.boxes[i], metadata.image_sizes[i]) for i in image_ids}


class GalleryCollector:
    """A :data:`pipeline.evaluation.scoring.BatchObserver` keeping ``limit`` images with their CAMs, the
    first of each class in the order seen, at most ceil(limit / ``classes``) per class: a split sorted by
    class still shows every class (up to ``limit``)."""

    def __init__(self, limit: int, classes: int = 1):
        self.limit = limit
        self.per_class = math.ceil(limit / classes)
        self.kept: Counter[int] = Counter()
        self.items: list[tuple[np.ndarray, np.ndarray, str]] = []  # rgb, cam, image id

    def __call__(self, images, cams, labels, predicted, image_ids) -> None:
        for k, label in enumerate(labels):
            if len(self.items) < self.limit and self.kept[label] < self.per_class:
                self.kept[label] += 1
                self.items.append((to_rgb(images[k:k + 1])[0], cams[k], image_ids[k]))

    def tiles(self, metadata: Metadata, threshold: float, class_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """The kept images as overlays: GT boxes red, the box at ``threshold`` green, captioned with the
        GT class (its name in ``class_names``, else 'class <index>') and, where the images have GT
        boxes, the green box's largest IoU with one of them."""
        boxes = gt_boxes_224(metadata, [image_id for _, _, image_id in self.items])
        tiles = []
        for rgb, cam, image_id in self.items:
            label = metadata.class_labels[image_id]
            caption = class_names[label] if class_names is not None else f"class {label}"
            box, gt = predicted_box(cam, threshold), boxes.get(image_id)
            if gt is not None:
                caption += f" IoU {best_iou(*box, gt):.2f}"
            tiles.append(overlay(rgb, cam, () if gt is None else gt, box, caption=caption))  # type: ignore[arg-type]
        return tiles
