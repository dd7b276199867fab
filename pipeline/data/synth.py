"""The built-in synthetic WSOL dataset: generated from a seed, byte-identical for the same settings.

Each class is an object with two kinds of evidence, and each image can mislead a localizer the
two ways WSOL methods fight:

* a small **head** in the class's colour (strong evidence, a small part: CAM tends to light up
  only there) on a larger **body** whose shape is the class's but whose colour is not (weak
  evidence spread over the object);
* a **background texture** (faint stripes of a class-specific orientation and period, over a tint
  that varies from image to image) that is the class's own with probability ``context_bias`` and
  another's otherwise (helpful for classification, wrong for localization: CAM tends to spill
  onto it).

Objects take 15-70 % of the image side, at a random position and rotation, over low-frequency
noise, with up to ``distractors`` neutral shapes behind them. The ground truth is the object's
pixel mask and its tight box. Beside it, each image has a region map: the index into
:data:`REGIONS` of every pixel, to measure where a CAM goes (see ``pipeline.metrics.regions``).
Output, in the custom-dataset layout the split stage reads (image ids and mask paths relative to
the root; region maps at :func:`~pipeline.data.dataset_folder.region_map_path` of ``regions/``)::

    images/<split>/<class>/<nnnn>.png     masks/<split>/<class>/<nnnn>.png (255 = object)
    metadata/<split>/*.txt (boxes)        metadata_masks/<split>/*.txt (masks)
    regions/images/<split>/<class>/<nnnn>.png (uint8 region index)
    classes.txt
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.settings.config import SPLITS, SynthConfig
from pipeline.data.dataset_folder import region_map_path
from pipeline.data.metadata import Box, MaskFiles, Metadata, write_metadata

HEAD_COLOURS = {  # RGB, saturated: the discriminative part
    "red": (225, 35, 35), "blue": (35, 80, 230), "yellow": (240, 215, 30), "magenta": (205, 40, 205),
    "cyan": (30, 205, 205), "orange": (245, 135, 20), "green": (40, 175, 55), "purple": (115, 55, 185),
}
# Body outlines in object units: the body spans x in [-1, 1], the head is a disc at x = 1.
BODY_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "pentagon", "cross", "arrow", "hexagon")
HEAD_RADIUS = 0.45  # object units
OBJECT_LENGTH = 2 + HEAD_RADIUS  # object units along the long axis
# Region map values, by index: background that is not the class's own (other classes' stripes,
# distractor shapes), background showing the image's own class stripes, the object's body, its head.
REGIONS = ("background", "context", "body", "part")
REGION_FOLDER = "regions"  # under the dataset root


def class_names(classes: int) -> list[str]:
    return [f"{colour}-{shape}" for colour, shape in zip(list(HEAD_COLOURS)[:classes], BODY_SHAPES[:classes])]


def pretrain_colours(shape: int, benchmark_classes: int) -> list[int]:
    """Head colours (indices into HEAD_COLOURS) an image of the pretrain stage's class ``shape`` (a
    body shape) may wear: every colour except the one the benchmark pairs with that shape (class c of
    the benchmark is colour c on shape c, for c < ``benchmark_classes``), so pretraining never sees a
    benchmark class, its colour and shape together."""
    return [c for c in range(len(HEAD_COLOURS)) if not (c == shape < benchmark_classes)]


@dataclass(frozen=True)
class Appearance:
    """How objects are drawn: length as a fraction of the image side (low, high), rotation drawn
    uniformly in +- ``max_rotation`` degrees, body grey levels [low, high)."""

    size_range: tuple[float, float]
    max_rotation: float
    body_greys: tuple[int, int]


BENCHMARK = Appearance(size_range=(0.15, 0.70), max_rotation=180.0, body_greys=(90, 170))


@dataclass(frozen=True)
class SceneSettings:
    """What :func:`sample_scene` reads (a :class:`SynthConfig` has the same fields, and the
    benchmark's appearance)."""

    image_size: int
    classes: int
    context_bias: float
    distractors: int
    appearance: Appearance = BENCHMARK


def _body_outline(shape: str) -> np.ndarray:
    """(N, 2) polygon in object units."""
    if shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), 0.55 * np.sin(t)], 1)
    if shape in ("pentagon", "hexagon"):
        n = 5 if shape == "pentagon" else 6
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([np.cos(t), 0.6 * np.sin(t)], 1)
    return np.array({
        "rectangle": [(-1, -0.5), (1, -0.5), (1, 0.5), (-1, 0.5)],
        "triangle": [(-1, -0.65), (1, 0), (-1, 0.65)],
        "diamond": [(-1, 0), (0, -0.6), (1, 0), (0, 0.6)],
        "cross": [(-1, -0.2), (-0.2, -0.2), (-0.2, -0.6), (0.2, -0.6), (0.2, -0.2), (1, -0.2), (1, 0.2),
                  (0.2, 0.2), (0.2, 0.6), (-0.2, 0.6), (-0.2, 0.2), (-1, 0.2)],
        "arrow": [(-1, -0.25), (0.3, -0.25), (0.3, -0.6), (1, 0), (0.3, 0.6), (0.3, 0.25), (-1, 0.25)],
    }[shape], dtype=np.float64)


@dataclass(frozen=True)
class Scene:
    """Every random choice of one image; :func:`render` turns it into pixels."""

    label: int
    context: int  # whose background texture: a class index
    tint: tuple[float, float, float]
    stripe_angle: float
    stripe_period: float  # px
    noise: np.ndarray  # (6, 6, 3) low-frequency background variation
    distractors: tuple[tuple[str, float, float, float, tuple[int, int, int]], ...]  # shape, cx, cy, radius, colour
    body: np.ndarray  # (N, 2) body polygon, pixels
    head: tuple[float, float, float]  # cx, cy, radius, pixels
    body_colour: tuple[int, int, int]
    head_colour: tuple[int, int, int]


def _stripes(index: int, classes: int) -> tuple[float, float]:
    """Class index's background stripes: angle (radians) and period (a fraction of the side)."""
    return math.pi * index / classes, 0.08 + 0.04 * (index % 3)


def sample_scene(rng: np.random.Generator, label: int, settings: SynthConfig | SceneSettings,
                 look: tuple[int, int] | None = None) -> Scene:
    """One image of class ``label`` (of ``settings.classes``, whose background stripes it may
    carry): head colour and body shape ``look`` (indices into HEAD_COLOURS, BODY_SHAPES), by
    default the benchmark's (label, label)."""
    head_index, body_index = (label, label) if look is None else look
    appearance = getattr(settings, "appearance", BENCHMARK)
    side = settings.image_size
    k = settings.classes
    own = rng.random() < settings.context_bias
    context = label if own or k == 1 else int(rng.choice([c for c in range(k) if c != label]))
    angle, period = _stripes(context, k)
    hue = rng.uniform(0, 180)  # OpenCV hue: any colour, unrelated to the class
    tint = tuple(cv2.cvtColor(np.array([[[hue, 70, 165]]], dtype=np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(float))

    length = rng.uniform(*appearance.size_range) * side
    scale = length / OBJECT_LENGTH  # px per object unit
    rotation = math.radians(rng.uniform(-appearance.max_rotation, appearance.max_rotation))
    rot = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    body = _body_outline(BODY_SHAPES[body_index]) @ rot.T * scale
    head = np.array([1.0, 0.0]) @ rot.T * scale
    radius = HEAD_RADIUS * scale
    low = np.minimum(body.min(0), head - radius)
    high = np.maximum(body.max(0), head + radius)
    centre = rng.uniform(-low + 1, side - 2 - high)  # the whole object inside the image

    distractors = []
    for _ in range(int(rng.integers(0, settings.distractors + 1))):
        grey = int(rng.integers(60, 200))
        colour = (grey, int(grey * rng.uniform(0.8, 1.0)), int(grey * rng.uniform(0.6, 0.9)))
        distractors.append((str(rng.choice(["disc", "square"])), *rng.uniform(0, side, 2),
                            rng.uniform(0.05, 0.12) * side, colour))
    grey = int(rng.integers(*appearance.body_greys))
    head_rgb = np.array(HEAD_COLOURS[list(HEAD_COLOURS)[head_index]]) + rng.integers(-15, 16, 3)
    red, green, blue = (int(v) for v in np.clip(head_rgb, 0, 255))
    return Scene(
        label=label, context=context, tint=tint, stripe_angle=angle, stripe_period=period * side,
        noise=rng.uniform(-25, 25, (6, 6, 3)), distractors=tuple(distractors), body=body + centre,
        head=(*(head + centre), radius), body_colour=(grey, grey, int(grey * 0.85)),
        head_colour=(red, green, blue),
    )


def _draw_distractors(canvas: np.ndarray, scene: Scene, value: int | None = None) -> None:
    """Draw the distractor shapes into canvas in place, each in its colour or in ``value``."""
    for shape, cx, cy, radius, colour in scene.distractors:
        fill = colour if value is None else value
        centre = (int(round(cx)), int(round(cy)))
        if shape == "disc":
            cv2.circle(canvas, centre, int(round(radius)), fill, -1)
        else:
            r = int(round(radius))
            cv2.rectangle(canvas, (centre[0] - r, centre[1] - r), (centre[0] + r, centre[1] + r), fill, -1)


def _object_masks(scene: Scene, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(side, side) uint8 body polygon and head disc, 255 on each (they overlap; the head is drawn last)."""
    body = np.zeros((side, side), np.uint8)
    cv2.fillPoly(body, [np.round(scene.body).astype(np.int32)], 255)
    head = np.zeros_like(body)
    cx, cy, radius = scene.head
    cv2.circle(head, (int(round(cx)), int(round(cy))), int(round(radius)), 255, -1)
    return body, head


def render(scene: Scene, side: int, with_object: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(side, side, 3) uint8 RGB image and (side, side) uint8 mask (255 on the object)."""
    y, x = np.mgrid[:side, :side].astype(np.float64)
    phase = (x * math.cos(scene.stripe_angle) + y * math.sin(scene.stripe_angle)) / scene.stripe_period
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * phase))
    image = np.array(scene.tint) * (0.9 + 0.1 * stripes[..., None])
    image += cv2.resize(scene.noise, (side, side), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image, 0, 255).astype(np.uint8)
    _draw_distractors(image, scene)
    mask = np.zeros((side, side), np.uint8)
    if with_object:
        body, head = _object_masks(scene, side)
        image[body > 0] = scene.body_colour
        image[head > 0] = scene.head_colour
        mask = body | head
    return image, mask


def region_map(scene: Scene, side: int) -> np.ndarray:
    """(side, side) uint8 index into :data:`REGIONS` of each pixel of ``render(scene, side)``: the
    object's head, else its body, else a distractor (background), else the stripes (context when
    they are the image's own class's, background otherwise)."""
    regions = np.full((side, side), REGIONS.index("context" if scene.context == scene.label else "background"),
                      np.uint8)
    _draw_distractors(regions, scene, REGIONS.index("background"))
    body, head = _object_masks(scene, side)
    regions[body > 0] = REGIONS.index("body")
    regions[head > 0] = REGIONS.index("part")
    return regions


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive pixel extent of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    path.write_bytes(encoded.tobytes())


def generate(settings: SynthConfig, root: Path) -> None:
    """Write the dataset under root (see the module docstring)."""
    names = class_names(settings.classes)
    side = settings.image_size
    for split_index, split in enumerate(SPLITS):
        ids: list[str] = []
        labels: dict[str, int] = {}
        boxes: dict[str, tuple[Box, ...]] = {}
        masks: dict[str, MaskFiles] = {}
        for label, name in enumerate(names):
            for n in range(getattr(settings.images_per_class, split)):
                rng = np.random.default_rng([settings.seed, split_index, label, n])
                scene = sample_scene(rng, label, settings)
                image, mask = render(scene, side)
                image_id, mask_path = (f"{kind}/{split}/{name}/{n:04d}.png" for kind in ("images", "masks"))
                _png(root / image_id, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                _png(root / mask_path, mask)
                _png(region_map_path(root / REGION_FOLDER, image_id), region_map(scene, side))
                ids.append(image_id)
                labels[image_id] = label
                boxes[image_id] = (tight_box(mask),)
                masks[image_id] = MaskFiles((mask_path,), "")
        sizes = {i: (side, side) for i in ids}
        write_metadata(Metadata(root, tuple(ids), labels, sizes, boxes=boxes), root / "metadata" / split)
        write_metadata(Metadata(root, tuple(ids), labels, sizes, masks=masks), root / "metadata_masks" / split)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in names))
