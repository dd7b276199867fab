"""`wsol localize`: class, score and box of any image with an exported model."""

import json
import re
from dataclasses import asdict
from pathlib import Path

import cv2
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.export_folder import META, ExportMeta
from pipeline.localize import to_image_pixels


def test_localize_prints_boxes_and_overlays_and_reports_unreadable_images(saved_project, tmp_path, capsys):
    layout, _, info = saved_project
    good = info.image_path("test", info.metadata("test").image_ids[0])
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(good)), (300, 200)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    model = layout.export("synth", "resnet50", "cam", 0) / "model.ts"
    status = main(["localize", str(good), str(broken), str(big), "--model", str(model), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert f"{broken}: cannot decode image" in captured.err
    found = json.loads(captured.out)
    assert [f["image"] for f in found] == [str(good), str(big)]
    for item, (width, height) in zip(found, [(96, 96), (300, 200)]):
        x0, y0, x1, y1 = item["box"]
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
    """BlobNetwork as TorchScript, with ``meta`` as its meta.json (None: without one)."""
    torch.jit.save(torch.jit.script(BlobNetwork()), str(path), _extra_files={} if meta is None else {META: meta})
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
    model = blob_export(tmp_path / "model.ts", BLOB_META)
    assert main(["localize", str(image), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    x0, y0, x1, y1 = json.loads(capsys.readouterr().out)[0]["box"]
    width, height = size
    assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height


@pytest.mark.parametrize("name, make, message", [
    ("notes.txt", lambda p: p.write_text("not a model"), "not a TorchScript file"),
    ("model.pt", lambda p: torch.save(BlobNetwork().state_dict() | {"w": torch.zeros(1)}, p), "not a TorchScript file"),
    ("model.onnx", lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch"), "not a TorchScript file"),
    ("model.ts", lambda p: blob_export(p, None), "TorchScript without the meta.json"),
    ("model.ts", lambda p: blob_export(p, "{not json"), r"\(meta.json\): not valid JSON"),
    ("model.ts", lambda p: blob_export(p, '{"dataset": "synth"}'), r"\(meta.json\): not a ExportMeta"),
    ("model.ts", lambda p: None, "no exported model there"),
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
        main(["localize", str(tmp_path / "image.png"), "--model", str(tmp_path / "missing.ts"), option, value])
    assert exited.value.code == 2
    assert stderr_lines(capsys)[-1] == f"wsol localize: error: argument {option}: {message.format(value)}"
