"""Figures: labelled galleries (row and column labels in margins, a class and IoU caption on each tile)
and BoxAcc curves with a panel per IoU."""

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.data.loading import IMAGENET_MEAN, IMAGENET_STD
from pipeline.data.metadata import Metadata
from pipeline.report.figures import GalleryCollector, curve_panels, grid, overlay

WHITE = 255


def _tiles(count: int, side: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 200, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def test_a_labelled_grid_adds_margins_with_the_labels_and_keeps_the_tiles():
    tiles = _tiles(6)
    plain = grid(tiles, 3)
    labelled = grid(tiles, 3, row_labels=["CAM", "Ours (ICL)"], column_labels=["a.png", "b.png", "c.png"])
    top, left = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
    assert top > 0 and left > 0
    assert np.array_equal(labelled[top:, left:], plain)  # the tiles where they were, shifted by the margins
    for row in range(2):  # a label drawn beside each row
        band = labelled[top + row * (64 + 4):top + row * (64 + 4) + 64, :left]
        assert (band < WHITE).any()
    for column in range(3):  # and above each column
        assert (labelled[:top, left + column * (64 + 4):left + column * (64 + 4) + 64] < WHITE).any()


def test_a_column_label_wider_than_its_tile_is_cut_to_the_tile():
    labelled = grid(_tiles(2), 2, column_labels=["images/test/a-very-long-class-name/0001.png", ""])
    top = labelled.shape[0] - grid(_tiles(2), 2).shape[0]
    assert (labelled[:top, :64] < WHITE).any()
    assert (labelled[:top, 64:] == WHITE).all()  # nothing spills over the gap or the second column


def _collector(cam: np.ndarray) -> GalleryCollector:
    """A collector holding one grey 224 px image 'x.png' with ``cam``."""
    grey = (torch.full((1, 3, 224, 224), 0.5) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    collector = GalleryCollector(4)
    collector(grey, cam[None], [1], [1], ["x.png"])
    return collector


def _metadata(boxes: dict | None) -> Metadata:
    return Metadata(Path("."), ("x.png",), {"x.png": 1}, {"x.png": (224, 224)}, boxes)


def test_gallery_tiles_carry_the_class_and_the_iou_of_the_drawn_box():
    cam = np.zeros((224, 224), np.float32)
    cam[0:100, 50:150] = 1.0  # the reference's box of it: (x, y, x + w, y + h) = (50, 0, 150, 100), 101 x 101 px
    gt = (0, 0, 99, 99)  # 100 x 100 px, overlapping it on 50 x 100: IoU 5000 / (10201 + 10000 - 5000) = 0.33
    collector = _collector(cam)
    rgb = collector.items[0][0]
    [tile] = collector.tiles(_metadata({"x.png": (gt,)}), 0.5, ["cat", "dog"])
    assert np.array_equal(tile, overlay(rgb, cam, [gt], (50, 0, 150, 100), caption="dog IoU 0.33"))
    assert not np.array_equal(tile, overlay(rgb, cam, [gt], (50, 0, 150, 100)))  # a caption was drawn
    [unnamed] = collector.tiles(_metadata({"x.png": (gt,)}), 0.5)
    assert np.array_equal(unnamed, overlay(rgb, cam, [gt], (50, 0, 150, 100), caption="class 1 IoU 0.33"))
    [masks_only] = collector.tiles(_metadata(None), 0.5, ["cat", "dog"])  # no GT boxes: no IoU
    assert np.array_equal(masks_only, overlay(rgb, cam, (), (50, 0, 150, 100), caption="dog"))


def test_gallery_keeps_every_class_of_a_split_sorted_by_class():
    """8 images of a split sorted by class (3 classes, 4 images each, in two batches): at most
    ceil(8 / 3) = 3 per class, the first of each class, so every class shows."""
    images, cams = torch.zeros(6, 3, 8, 8), np.zeros((6, 8, 8), np.float32)
    collector = GalleryCollector(8, classes=3)
    ids = [f"{c}/{k}.png" for c in range(3) for k in range(4)]
    labels = [c for c in range(3) for _ in range(4)]
    for start in (0, 6):
        collector(images, cams, labels[start:start + 6], labels[start:start + 6], ids[start:start + 6])
    assert [image_id for _, _, image_id in collector.items] == [
        "0/0.png", "0/1.png", "0/2.png", "1/0.png", "1/1.png", "1/2.png", "2/0.png", "2/1.png"]
    one_class = GalleryCollector(3)  # no class count: the first images, whatever their class
    one_class(images, cams, labels[:6], labels[:6], ids[:6])
    assert [image_id for _, _, image_id in one_class.items] == ["0/0.png", "0/1.png", "0/2.png"]


def test_curve_panels_draw_one_panel_per_iou(tmp_path):
    curves = [("CAM", [0, 0.5, 1], [0, 50, 10], "-", "#00c800"), ("floor", [0, 0.5, 1], [0, 20, 5], ":", "#000000")]
    one = cv2.imread(str(curve_panels([("IoU ≥ 0.5", curves)], tmp_path / "one.png", ylabel="BoxAcc (%)")))
    three = cv2.imread(str(curve_panels([(f"IoU ≥ {d}", curves) for d in (0.3, 0.5, 0.7)], tmp_path / "three.png",
                                        ylabel="BoxAcc (%)", title="synth test")))
    assert one.shape[0] == three.shape[0] and three.shape[1] > 2 * one.shape[1]
    green = (one[..., 1] > 180) & (one[..., 0] < 60) & (one[..., 2] < 60)  # BGR: the CAM line in its colour
    assert green.sum() > 100


def test_one_colour_per_method_everywhere_and_the_plot_templates_name_only_what_they_show(tmp_path):
    from pipeline.report.colours import ROW_COLOURS, method_colour
    from pipeline.report.plot_templates import write_templates
    from pipeline.settings.registry import METHODS
    colours = [method_colour(m) for m in METHODS]
    assert len(set(colours)) == len(colours) and not set(colours) & set(ROW_COLOURS.values())  # all distinct
    assert method_colour("icl") == "#d62728" and len({method_colour(m) for m in ("icl", "cam", "adl")}) == 3
    names = {"Ours (ICL)": "#d62728", "CAM": "#1f77b4", "Center Gaussian (floor)": "#000000"}
    write_templates(tmp_path, names)
    for name in ("by_epoch", "by_run_per_iou", "by_run"):  # the names dvc.yaml's plots use
        template = json.loads((tmp_path / f"{name}.json").read_text())
        colour = template["encoding"]["color"]
        assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"], strict=True)) == names  # the legend
        assert "strokeDash" not in template["encoding"] and template["data"] == {"values": "<DVC_METRIC_DATA>"}
