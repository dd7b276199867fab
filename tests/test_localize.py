"""`wsol localize`: class, score and box of any image with an exported model."""

import json
from pathlib import Path

import cv2

from pipeline.cli import main
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
