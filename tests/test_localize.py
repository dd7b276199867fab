"""`wsol localize`: class, score and box of any image with an exported model."""

import json
import re
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.evaluation.localize import overlay_names, to_image_pixels
from pipeline.formats.export_folder import META, ExportMeta
from pipeline.report.figures import overlay, save_picture


def test_localize_prints_boxes_and_overlays_and_reports_unreadable_images(saved_project, tmp_path, capsys):
    layout, _, info = saved_project
    good = info.image_path("test", info.metadata("test").image_ids[0])
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(good)), (300, 200)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    model = layout.export("synth", "resnet50", "cam", 0) / "model.pt2"
    status = main(["localize", str(good), str(broken), str(big), "--model", str(model), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert f"{broken}: cannot decode image" in captured.err
    found = json.loads(captured.out)
    assert [f["image"] for f in found] == [str(good), str(big)]
    for item, (width, height) in zip(found, [(96, 96), (300, 200)], strict=False):
        x0, y0, x1, y1 = (item["box"][k] for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height
        assert item["class_name"] in info.class_names and 0 < item["score"] <= 1
        assert Path(item["overlay"]).is_file()


def test_boxes_go_back_to_the_image_pixels():
    assert to_image_pixels((0, 0, 223, 223), 448, 112) == (0, 0, 447, 111)
    assert to_image_pixels((112, 56, 167, 111), 448, 448) == (224, 112, 335, 223)
    assert to_image_pixels((100, 100, 120, 120), 1, 1) == (0, 0, 0, 0)  # the pixels the box covers
    assert to_image_pixels((100, 100, 120, 120), 3, 2) == (1, 0, 1, 1)


class BlobNetwork(torch.nn.Module):
    """An exported network's interface, whatever the image: two classes, a CAM that is 1 on (100..119)^2."""

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cams = torch.zeros(images.shape[0], 224, 224)
        cams[:, 100:120, 100:120] = 1.0
        return torch.zeros(images.shape[0], 2), cams


def blob_export(path: Path, meta: str | None, network: torch.nn.Module | None = None) -> Path:
    """``network`` (BlobNetwork()) as a torch.export program for one 8x8 image, with ``meta`` as its meta.json
    (None: without one)."""
    program = torch.export.export(network or BlobNetwork(), (torch.zeros(1, 3, 8, 8), torch.tensor([-1])))
    torch.export.save(program, path, extra_files={} if meta is None else {META: meta})
    return path


BLOB_META = json.dumps(asdict(ExportMeta("synth", "resnet50", "cam", 2, ["a", "b"], 0.5, input_size=8, mean=[0.5] * 3,
                                         std=[0.5] * 3, mlflow_run_id=None)))


def stderr_lines(capsys) -> list[str]:
    """What a failed command wrote to stderr, which holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


@pytest.mark.parametrize("size", [(1, 1), (3, 2)])
def test_images_smaller_than_the_cam_get_a_box_inside_them(tmp_path, capsys, size):
    image = tmp_path / "tiny.png"
    Image.new("RGB", size, (200, 20, 20)).save(image)
    model = blob_export(tmp_path / "model.pt2", BLOB_META)
    assert main(["localize", str(image), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    x0, y0, x1, y1 = json.loads(capsys.readouterr().out)[0]["box"].values()
    width, height = size
    assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height


@pytest.mark.parametrize("name, make, message", [
    ("notes.txt", lambda p: p.write_text("not a model"), "not a torch.export program"),
    ("model.pt", lambda p: torch.save({"w": torch.zeros(1)}, p), "not a torch.export program"),
    ("model.onnx", lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch"), "not a torch.export program"),
    ("model.pt2", lambda p: blob_export(p, None), "torch.export program without the meta.json"),
    ("model.pt2", lambda p: blob_export(p, "{not json"), r"\(meta.json\): not valid JSON"),
    ("model.pt2", lambda p: blob_export(p, '{"dataset": "synth"}'), r"\(meta.json\): not a ExportMeta"),
    ("model.pt2", lambda p: None, "no exported model there"),
])
def test_a_model_of_the_wrong_kind_is_one_line_naming_the_file(tmp_path, capsys, name, make, message):
    model = tmp_path / name
    make(model)
    assert main(["localize", str(tmp_path / "image.png"), "--model", str(model)]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol localize: error: {model}") and re.search(message, line)


@pytest.mark.parametrize("option, value, message", [
    ("--threshold", "nan", "expected a number in [0, 1], got 'nan'"),
    ("--threshold", "inf", "expected a number in [0, 1], got 'inf'"),
    ("--threshold", "1.5", "expected a number in [0, 1], got '1.5'"),
    ("--threshold", "-0.1", "expected a number in [0, 1], got '-0.1'"),
    ("--out", "a-file", "'{}' is a file; expected the name of a folder to write"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, option, value, message):
    (tmp_path / "a-file").write_text("")
    value = str(tmp_path / value) if value == "a-file" else value
    with pytest.raises(SystemExit) as exited:  # before the model (missing) is even looked for
        main(["localize", str(tmp_path / "image.png"), "--model", str(tmp_path / "missing.pt2"), option, value])
    assert exited.value.code == 2
    assert stderr_lines(capsys)[-1] == f"wsol localize: error: argument {option}: {message.format(value)}"


def test_same_stem_images_in_two_folders_get_one_overlay_each(tmp_path, capsys):
    images = [tmp_path / "a" / "0005.png", tmp_path / "b" / "0005.png", tmp_path / "c.png"]
    for colour, image in zip([(200, 20, 20), (20, 20, 200), (20, 200, 20)], images, strict=False):
        image.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 30), colour).save(image)
    model = blob_export(tmp_path / "model.pt2", BLOB_META)
    assert main(["localize", *map(str, images), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    found = json.loads(capsys.readouterr().out)
    names = [Path(item["overlay"]).name for item in found]
    assert names == ["a__0005_cam.png", "b__0005_cam.png", "c_cam.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert [item["image"] for item in found] == list(map(str, images))
    for item in found:  # each image's own overlay: its dominant colour shows through the heat map
        own = np.array(Image.open(item["image"]).getpixel((2, 28)))
        drawn = cv2.cvtColor(cv2.imread(item["overlay"]), cv2.COLOR_BGR2RGB)[-390:][28 * 13, 2 * 13].astype(int)
        assert np.abs(drawn - (own // 2 + np.array([0, 0, 64]))).max() <= 2  # half the image, half jet's 0


def test_overlay_names_are_unique_and_deterministic(tmp_path):
    images = [Path("x/a/0005.png"), Path("x/b/0005.jpg"), Path("x/a/0005.png"), Path("x/0005.png"), Path("x/c.png")]
    assert overlay_names(images) == ["a__0005_cam.png", "b__0005_cam.png", "a__0005_2_cam.png", "0005_cam.png",
                                     "c_cam.png"]
    assert overlay_names(images) == overlay_names(list(images))
    assert overlay_names([]) == []


GREEN = np.array([30, 200, 30])  # figures.PREDICTED_COLOUR, RGB
GREY = np.array([128, 128, 128])
UNDER_A_COLD_CAM = GREY // 2 + np.array([0, 0, 64])  # half the image, half jet's 0 (RGB 0, 0, 128)


def localized(tmp_path, capsys, image: np.ndarray, *options: str, network: torch.nn.Module | None = None
              ) -> tuple[dict, np.ndarray]:
    """``wsol localize`` of one (H, W, 3) uint8 RGB image with ``network`` (BlobNetwork()): its JSON and its
    overlay as RGB."""
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    model = blob_export(tmp_path / "model.pt2", BLOB_META, network)
    assert main(["localize", str(path), "--model", str(model), "--out", str(tmp_path / "out"), *options]) == 0
    [item] = json.loads(capsys.readouterr().out)
    return item, cv2.cvtColor(cv2.imread(item["overlay"]), cv2.COLOR_BGR2RGB)


def frame(side: int, x0: int, x1: int, thickness: int) -> np.ndarray:
    """(side, side) bool: a square frame, columns/rows x0..x1 inclusive, ``thickness`` px wide inwards."""
    inside = np.zeros((side, side), bool)
    inside[x0:x1 + 1, x0:x1 + 1] = True
    inside[x0 + thickness:x1 + 1 - thickness, x0 + thickness:x1 + 1 - thickness] = False
    return inside


def test_a_96_px_overlay_is_upscaled_4x_with_its_box_inside_and_the_caption_above(tmp_path, capsys):
    item, drawn = localized(tmp_path, capsys, np.full((96, 96, 3), 128, np.uint8))
    # CAM 1 on grid cells 100..119 -> contour box (100, 100, 120, 120) -> image pixels 42..51 (96 * 100 // 224 = 42,
    # ceil(121 * 96 / 224) - 1 = 51); the JSON stays in the image's pixels
    assert item["box"] == {"x0": 42, "y0": 42, "x1": 51, "y1": 51}
    strip = drawn.shape[0] - 384
    assert drawn.shape[1] == 384 and 10 <= strip <= 40  # 96 x 4, and a strip of one line of text on top
    caption, image = drawn[:strip], drawn[strip:]
    assert (caption == 0).all(axis=2).any() and (caption == 255).all(axis=2).any()  # white on black
    assert ((caption == caption[..., :1]).all(axis=2)).all()  # nothing but grey levels: no image there
    green = frame(384, 42 * 4, 52 * 4 - 1, 3)  # pixels 42..51 are display pixels 168..207; 3 px at 384 px
    assert (image[green] == GREEN).all()
    assert not (image[~green] == GREEN).all(axis=1).any()
    assert (image[:64, :192] == UNDER_A_COLD_CAM).all()  # where the old overlay had its caption band


def test_the_caption_and_the_box_leave_the_rest_of_the_image_as_the_plain_overlay(tmp_path, capsys):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8)  # H 40, W 30: 13x (390 x 520)
    item, drawn = localized(tmp_path, capsys, pixels)
    box = item["box"]
    assert box == {"x0": 13, "y0": 17, "x1": 16, "y1": 21}  # 30 * 100 // 224, 40 * 100 // 224, ceil(121 * 30 / 224) - 1
    image = drawn[-520:]
    assert image.shape == (520, 390, 3)
    plain = overlay(np.repeat(np.repeat(pixels, 13, axis=0), 13, axis=1), BlobNetwork()(torch.zeros(1, 3, 8, 8), None)[1][0].numpy(),
                    at_image_size=True)
    away = np.ones((520, 390), bool)
    away[box["y0"] * 13:(box["y1"] + 1) * 13, box["x0"] * 13:(box["x1"] + 1) * 13] = False
    assert (image[away] == plain[away]).all()
    cold = np.ones((40, 30), bool)  # pixels well away from the CAM's blob: each a crisp 13 x 13 block
    cold[10:30, 8:22] = False
    blocks = image.reshape(40, 13, 30, 13, 3).transpose(0, 2, 1, 3, 4)[cold].astype(int)  # (n, 13, 13, 3)
    expected = pixels[cold].astype(int) // 2 + np.array([0, 0, 64])
    assert np.abs(blocks - expected[:, None, None]).max() <= 1


class FullNetwork(torch.nn.Module):
    """A CAM of 1 everywhere: the box is the whole image."""

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(images.shape[0], 2), torch.ones(images.shape[0], 224, 224)


@pytest.mark.parametrize("size, factor", [((96, 96), 4), ((300, 200), 2), ((3, 2), 192), ((500, 400), 1)])
def test_a_box_on_the_image_edges_is_drawn_whole(tmp_path, capsys, size, factor):
    width, height = size
    item, drawn = localized(tmp_path, capsys, np.full((height, width, 3), 128, np.uint8), network=FullNetwork())
    assert item["box"] == {"x0": 0, "y0": 0, "x1": width - 1, "y1": height - 1}
    image = drawn[-height * factor:]
    assert drawn.shape[1] == width * factor and image.shape[:2] == (height * factor, width * factor)
    thickness = max(1, round(min(image.shape[:2]) / 112))
    for edge in (image[:thickness], image[-thickness:], image[:, :thickness], image[:, -thickness:]):
        assert (edge == GREEN).all()
    assert not (image[thickness:-thickness, thickness:-thickness] == GREEN).all(axis=2).any()


class TwoLevelNetwork(torch.nn.Module):
    """A CAM of 0.3 on grid cells 40..179 and 1 on 100..119: a threshold under 0.3 boxes the larger square."""

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cams = torch.zeros(images.shape[0], 224, 224)
        cams[:, 40:180, 40:180] = 0.3
        cams[:, 100:120, 100:120] = 1.0
        return torch.zeros(images.shape[0], 2), cams


@pytest.mark.parametrize("options, threshold, source, box", [
    ((), 0.5, "model", (100, 100, 120, 120)),
    (("--threshold", "0.2"), 0.2, "--threshold", (40, 40, 180, 180)),
    (("--threshold", "0.37"), 0.37, "--threshold", (100, 100, 120, 120)),
])
def test_the_json_names_the_threshold_that_cut_the_box(tmp_path, capsys, options, threshold, source, box):
    item, _ = localized(tmp_path, capsys, np.full((224, 224, 3), 128, np.uint8), *options, network=TwoLevelNetwork())
    assert item["cam_threshold"] == threshold and item["threshold_source"] == source
    assert tuple(item["box"].values()) == box


def test_the_json_box_names_its_corners(tmp_path, capsys):
    image = tmp_path / "image.png"
    Image.new("RGB", (448, 224), (128, 128, 128)).save(image)
    model = blob_export(tmp_path / "model.pt2", BLOB_META)
    assert main(["localize", str(image), "--model", str(model)]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert list(item["box"]) == ["x0", "y0", "x1", "y1"]
    assert item["box"] == dict(zip(["x0", "y0", "x1", "y1"], to_image_pixels((100, 100, 120, 120), 448, 224), strict=False))


@pytest.mark.parametrize("name", ["picture.png", "picture.jpg", "picture.JPEG"])
def test_picture_writes_print_no_unsupported_key(tmp_path, capfd, name):
    path = save_picture(tmp_path / name, np.full((16, 16, 3), 90, np.uint8))
    assert path.is_file() and cv2.imread(str(path)).shape == (16, 16, 3)
    assert "unsupported key" not in capfd.readouterr().err
