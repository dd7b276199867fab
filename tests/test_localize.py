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
from pipeline.report.figures import save_picture


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


def blob_export(path: Path, meta: str | None) -> Path:
    """BlobNetwork as a torch.export program for one 8x8 image, with ``meta`` as its meta.json (None: without one)."""
    program = torch.export.export(BlobNetwork(), (torch.zeros(1, 3, 8, 8), torch.tensor([-1])))
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
        drawn = cv2.cvtColor(cv2.imread(item["overlay"]), cv2.COLOR_BGR2RGB)[28, 2].astype(int)
        assert np.abs(drawn - (own // 2 + np.array([0, 0, 64]))).max() <= 2  # half the image, half jet's 0


def test_overlay_names_are_unique_and_deterministic(tmp_path):
    images = [Path("x/a/0005.png"), Path("x/b/0005.jpg"), Path("x/a/0005.png"), Path("x/0005.png"), Path("x/c.png")]
    assert overlay_names(images) == ["a__0005_cam.png", "b__0005_cam.png", "a__0005_2_cam.png", "0005_cam.png",
                                     "c_cam.png"]
    assert overlay_names(images) == overlay_names(list(images))
    assert overlay_names([]) == []


@pytest.mark.parametrize("size", [(96, 96), (300, 200), (3, 2)])
def test_overlays_are_at_the_image_size_with_the_class_and_score_drawn(tmp_path, capsys, size):
    image = tmp_path / "image.png"
    Image.new("RGB", size, (128, 128, 128)).save(image)
    model = blob_export(tmp_path / "model.pt2", BLOB_META)
    assert main(["localize", str(image), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    [item] = json.loads(capsys.readouterr().out)
    drawn = cv2.imread(item["overlay"])
    assert drawn.shape[:2] == (size[1], size[0])
    if size[0] >= 96:  # the caption: white text on a black band, top left
        corner = drawn[: size[1] // 6, : size[0] // 2]
        assert (corner == 0).all(axis=2).any() and (corner == 255).all(axis=2).any()


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
