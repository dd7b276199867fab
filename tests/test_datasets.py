"""Dataset sources, split construction and loading, on small data the tests build."""

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.dag.paths import MANIFEST, Layout
from pipeline.data import acquire
from pipeline.data.dataset_folder import DatasetError, DatasetInfo, region_map_path
from pipeline.data.download import ChecksumError
from pipeline.data.images import ImageReadError, load_rgb
from pipeline.data.loading import (
    PreparedImages,
    SplitImages,
    eval_transform,
    split_images,
    split_loader,
    train_transform,
)
from pipeline.data.prepared import prepare_splits
from pipeline.data.synth import generate, render, sample_scene, tight_box
from pipeline.settings.config import SynthConfig, load_config
from tests.helpers import config, make_project, tarball, zipped
from tests.http_server import FileServer


def jpeg(width: int, height: int, value: int = 100) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), value, np.uint8))[1].tobytes()


def png(width: int, height: int, value: int = 255) -> bytes:
    return cv2.imencode(".png", np.full((height, width), value, np.uint8))[1].tobytes()


def serve(server: FileServer, name: str, data: bytes) -> dict:
    """Publish data at /name; the params.yaml Source for it."""
    server.behaviour.files[f"/{name}"] = data
    return {"urls": [server.url(f"/{name}")], "checksum": "sha256:" + hashlib.sha256(data).hexdigest(), "filename": name}


def metadata_sources(server: FileServer, prefix: str, files: dict[str, str]) -> dict:
    return {key: serve(server, f"{prefix}_{key}.txt", text.encode()) for key, text in files.items()}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ------------------------------------------------------------------------------------------- synth

SMALL_SYNTH = {"datasets.synth.images_per_class": {"train": 3, "val": 2, "test": 2}, "datasets.synth.classes": 3}


def digest_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_synth_is_deterministic_in_its_seed(tmp_path):
    settings = config(**SMALL_SYNTH).datasets.synth
    generate(settings, tmp_path / "a")
    generate(settings, tmp_path / "b")
    generate(settings.model_copy(update={"seed": 1}), tmp_path / "c")
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b") != digest_tree(tmp_path / "c")
    assert len(list((tmp_path / "a" / "images").rglob("*.png"))) == 3 * (3 + 2 + 2)


def test_synth_masks_and_boxes_are_the_drawn_object():
    settings = config().datasets.synth
    side = settings.image_size
    for n in range(40):
        rng = np.random.default_rng([7, n])
        scene = sample_scene(rng, n % settings.classes, settings)
        with_object, mask = render(scene, side)
        without_object, empty = render(scene, side, with_object=False)
        changed = (with_object != without_object).any(axis=-1)
        on = mask > 0
        assert not empty.any()
        assert not changed[~on].any()  # nothing outside the mask was drawn
        assert changed[on].mean() > 0.95  # the mask is what was drawn (a few pixels may match by chance)
        x0, y0, x1, y1 = tight_box(mask)
        ys, xs = np.nonzero(on)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert 0 < x0 and 0 < y0 and x1 < side - 1 and y1 < side - 1  # wholly inside the image
        length = max(x1 - x0, y1 - y0) + 1
        assert 0.1 * side <= length <= 0.75 * side


def test_synth_context_bias_sets_how_often_the_background_is_the_class_own():
    settings = config().datasets.synth
    for bias, expected in ((1.0, 1.0), (0.0, 0.0), (0.8, 0.8)):
        biased = SynthConfig(**{**settings.model_dump(), "context_bias": bias})
        own = [sample_scene(np.random.default_rng([n]), n % 4, biased).context == n % 4 for n in range(1000)]
        assert np.mean(own) == pytest.approx(expected, abs=0.04)


def test_synth_download_and_split_stages(tmp_path):
    cfg = config(**SMALL_SYNTH)
    layout = Layout(tmp_path)
    acquire.download(cfg, layout)
    info = acquire.split(cfg, layout)
    assert info.num_classes == 3 and info.class_names == ("red-ellipse", "blue-rectangle", "yellow-triangle")
    test = info.metadata("test")
    assert len(test) == 6 and test.boxes is not None
    masks = DatasetInfo.load(info.folder).mask_metadata_dir("test")
    assert masks is not None and lines(masks / "localization.txt")[0] == "images/test/red-ellipse/0000.png,masks/test/red-ellipse/0000.png,"
    image = cv2.imread(str(info.image_path("test", test.image_ids[0])))
    assert image.shape == (96, 96, 3)
    assert json.loads((info.folder / "dataset.json").read_text())["region_root"] == "../../raw/synth/regions"
    assert info.region_root == layout.raw("synth") / "regions"
    assert region_map_path(info.region_root, test.image_ids[0]) == info.region_root / "images/test/red-ellipse/0000.png"
    assert cv2.imread(str(region_map_path(info.region_root, test.image_ids[0])), cv2.IMREAD_UNCHANGED).shape == (96, 96)


def test_split_lists_every_missing_or_misshapen_region_map(tmp_path):
    cfg = config(**SMALL_SYNTH)
    layout = Layout(tmp_path)
    acquire.download(cfg, layout)
    regions = layout.raw("synth") / "regions"
    (regions / "images/val/red-ellipse/0001.png").unlink()
    (regions / "images/test/blue-rectangle/0000.png").write_bytes(png(90, 96))
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, layout)
    message = str(error.value)
    assert "2 problem(s)" in message
    assert "val: region map of image 'images/val/red-ellipse/0001.png'" in message and "file is missing" in message
    assert "test: region map of image 'images/test/blue-rectangle/0000.png'" in message
    assert "is (90, 96), the image is (96, 96)" in message
    assert not layout.split("synth").exists()


# --------------------------------------------------------------------------------------------- CUB

CUB_IMAGES = {  # number: (path, class, train?, size, x y w h)
    1: ("001.Aa/A_1.jpg", 1, True, (40, 30), "10.5 5.0 20.25 10.0"),
    2: ("001.Aa/A_2.jpg", 1, False, (50, 20), "0.0 0.0 49.0 19.0"),
    3: ("002.Bb/B_1.jpg", 2, True, (30, 40), "3.0 4.0 5.0 6.0"),
    4: ("002.Bb/B_2.jpg", 2, False, (20, 20), "1.0 1.0 1.0 1.0"),
}


def cub_params(server: FileServer, images_checksum: str | None = None) -> dict:
    root = "CUB_200_2011/"
    files = {root + "images/" + path: jpeg(*size) for path, _, _, size, _ in CUB_IMAGES.values()}
    files[root + "images.txt"] = "".join(f"{n} {v[0]}\n" for n, v in CUB_IMAGES.items()).encode()
    files[root + "image_class_labels.txt"] = "".join(f"{n} {v[1]}\n" for n, v in CUB_IMAGES.items()).encode()
    files[root + "train_test_split.txt"] = "".join(f"{n} {int(v[2])}\n" for n, v in CUB_IMAGES.items()).encode()
    files[root + "bounding_boxes.txt"] = "".join(f"{n} {v[4]}\n" for n, v in CUB_IMAGES.items()).encode()
    files[root + "classes.txt"] = b"1 001.Aa\n2 002.Bb\n"
    images = serve(server, "CUB_200_2011.tgz", tarball(files))
    if images_checksum is not None:
        images["checksum"] = images_checksum
    cubv2 = serve(server, "CUBV2.tar", tarball({"001.Aa/111.jpg": jpeg(60, 40), "002.Bb/222.jpg": jpeg(32, 32)}, gzip=False))
    val = metadata_sources(server, "cub_val", {
        "image_ids": "001.Aa/111.jpg\n002.Bb/222.jpg\n",
        "class_labels": "001.Aa/111.jpg,0\n002.Bb/222.jpg,1\n",
        "image_sizes": "001.Aa/111.jpg,60,40\n002.Bb/222.jpg,32,32\n",
        "localization": "001.Aa/111.jpg,1,2,30,20\n002.Bb/222.jpg,0,0,31,31\n002.Bb/222.jpg,5,5,9,9\n",
    })
    return {"dataset": "cub", "datasets.cub": {"images": images, "fullsup_images": cubv2, "fullsup_metadata": val}}


def test_cub_download_and_split_build_the_protocol_metadata(tmp_path):
    with FileServer() as server:
        cfg = config(**cub_params(server))
        layout = Layout(tmp_path)
        acquire.download(cfg, layout)
        info = acquire.split(cfg, layout)
    meta = info.folder / "metadata"
    assert lines(meta / "train" / "image_ids.txt") == ["001.Aa/A_1.jpg", "002.Bb/B_1.jpg"]
    assert lines(meta / "train" / "class_labels.txt") == ["001.Aa/A_1.jpg,0", "002.Bb/B_1.jpg,1"]
    assert lines(meta / "train" / "image_sizes.txt") == ["001.Aa/A_1.jpg,40,30", "002.Bb/B_1.jpg,30,40"]
    # x y w h -> int(x), int(y), int(x + w), int(y + h)
    assert lines(meta / "train" / "localization.txt") == ["001.Aa/A_1.jpg,10,5,30,15", "002.Bb/B_1.jpg,3,4,8,10"]
    assert lines(meta / "test" / "localization.txt") == ["001.Aa/A_2.jpg,0,0,49,19", "002.Bb/B_2.jpg,1,1,2,2"]
    assert lines(meta / "val" / "localization.txt") == ["001.Aa/111.jpg,1,2,30,20", "002.Bb/222.jpg,0,0,31,31",
                                                         "002.Bb/222.jpg,5,5,9,9"]
    assert info.class_names == ("001.Aa", "002.Bb") and info.num_classes == 2
    assert info.image_path("val", "001.Aa/111.jpg").is_file() and info.image_path("test", "002.Bb/B_2.jpg").is_file()
    written = json.loads((info.folder / "dataset.json").read_text())
    assert written["images"] == {"train": 2, "val": 2, "test": 2}
    assert written["region_root"] is None and info.region_root is None


def test_cub_wrong_checksum_fails_and_unpacks_nothing(tmp_path):
    with FileServer() as server:
        cfg = config(**cub_params(server, images_checksum="sha256:" + "1" * 64))
        with pytest.raises(ChecksumError, match="CUB_200_2011.tgz: checksum mismatch"):
            acquire.download(cfg, Layout(tmp_path))
    assert not (tmp_path / "data" / "raw" / "cub").exists()
    assert list((tmp_path / "data" / "downloads").iterdir()) == []


# ------------------------------------------------------------------------------------------ ILSVRC

def test_ilsvrc_from_a_local_copy_xml_boxes_and_imagenetv2(tmp_path):
    imagenet = tmp_path / "imagenet"
    for wnid, names in {"n02": ["c.JPEG"], "n01": ["a.JPEG", "b.JPEG"]}.items():
        (imagenet / "train" / wnid).mkdir(parents=True)
        for name in names:
            (imagenet / "train" / wnid / name).write_bytes(jpeg(20, 10))
    (imagenet / "val").mkdir()
    xmls = tmp_path / "xml"
    xmls.mkdir()
    for n, (wnid, boxes) in enumerate([("n02", [(1, 2, 10, 8)]), ("n01", [(0, 0, 5, 5), (3, 3, 19, 9)])], start=1):
        name = f"ILSVRC2012_val_{n:08d}"
        (imagenet / "val" / f"{name}.JPEG").write_bytes(jpeg(20, 10))
        objects = "".join(f"<object><name>{wnid}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                          f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
        (xmls / f"{name}.xml").write_text(f"<annotation><filename>{name}</filename><size><width>20</width>"
                                          f"<height>10</height></size>{objects}</annotation>")
    with FileServer() as server:
        v2 = serve(server, "imagenetv2.tar.gz", tarball({"imagenetv2-threshold0.7/0/1.jpeg": jpeg(8, 8),
                                                          "imagenetv2-threshold0.7/1/2.jpeg": jpeg(8, 8)}))
        val = metadata_sources(server, "v2", {
            "image_ids": "val2/0/1.jpeg\nval2/1/2.jpeg\n", "class_labels": "val2/0/1.jpeg,0\nval2/1/2.jpeg,1\n",
            "image_sizes": "val2/0/1.jpeg,8,8\nval2/1/2.jpeg,8,8\n",
            "localization": "val2/0/1.jpeg,0,0,7,7\nval2/1/2.jpeg,1,1,6,6\n"})
        cfg = config(**{"dataset": "ilsvrc", "datasets.ilsvrc": {
            "root": str(imagenet), "val_annotations": str(xmls), "fullsup_images": v2, "fullsup_metadata": val}})
        layout = Layout(tmp_path / "project")
        acquire.download(cfg, layout)
        info = acquire.split(cfg, layout)
    meta = info.folder / "metadata"
    assert lines(meta / "train" / "class_labels.txt") == ["train/n01/a.JPEG,0", "train/n01/b.JPEG,0", "train/n02/c.JPEG,1"]
    assert lines(meta / "test" / "class_labels.txt") == ["val/ILSVRC2012_val_00000001.JPEG,1",
                                                          "val/ILSVRC2012_val_00000002.JPEG,0"]
    assert lines(meta / "test" / "localization.txt") == ["val/ILSVRC2012_val_00000001.JPEG,1,2,10,8",
                                                          "val/ILSVRC2012_val_00000002.JPEG,0,0,5,5",
                                                          "val/ILSVRC2012_val_00000002.JPEG,3,3,19,9"]
    assert info.image_path("val", "val2/1/2.jpeg").is_file() and info.class_names == ("n01", "n02")
    assert info.image_roots["train"] == imagenet.resolve()  # used in place, not copied


def test_ilsvrc_without_a_local_copy_says_which_setting_to_fill(tmp_path):
    with pytest.raises(DatasetError, match="datasets.ilsvrc.root and datasets.ilsvrc.val_annotations"):
        acquire.download(config(dataset="ilsvrc"), Layout(tmp_path))


# -------------------------------------------------------------------------------------- OpenImages

def test_openimages_masks_with_ignore_regions_and_measured_sizes(tmp_path):
    images = {"OpenImages/train/c1/t.jpg": jpeg(30, 20), "OpenImages/train/c2/u.jpg": jpeg(30, 20),
              "OpenImages/val/c1/v.jpg": jpeg(16, 12), "OpenImages/test/c2/w.jpg": jpeg(10, 10)}
    masks = {"val/c1/v_m1.png": png(16, 12), "val/c1/v_m2.png": png(16, 12, 0), "val/c1/v_ignore.png": png(16, 12),
             "test/c2/w_m1.png": png(10, 10)}
    with FileServer() as server:
        split_files = {
            "train": {"image_ids": "train/c1/t.jpg\ntrain/c2/u.jpg\n", "class_labels": "train/c1/t.jpg,0\ntrain/c2/u.jpg,1\n",
                      "image_sizes": "", "localization": ""},
            "val": {"image_ids": "val/c1/v.jpg\n", "class_labels": "val/c1/v.jpg,0\n", "image_sizes": "",
                    "localization": "val/c1/v.jpg,val/c1/v_m1.png,val/c1/v_ignore.png\nval/c1/v.jpg,val/c1/v_m2.png,\n"},
            "test": {"image_ids": "test/c2/w.jpg\n", "class_labels": "test/c2/w.jpg,1\n", "image_sizes": "",
                     "localization": "test/c2/w.jpg,test/c2/w_m1.png,\n"},
        }
        cfg = config(**{"dataset": "openimages", "datasets.openimages": {
            "images": serve(server, "oi_images.zip", zipped(images)), "masks": serve(server, "oi_masks.zip", zipped(masks)),
            "metadata": {s: metadata_sources(server, f"oi_{s}", f) for s, f in split_files.items()}}})
        layout = Layout(tmp_path)
        acquire.download(cfg, layout)
        info = acquire.split(cfg, layout)
    meta = info.folder / "metadata"
    assert lines(meta / "val" / "image_sizes.txt") == ["val/c1/v.jpg,16,12"]
    assert not (meta / "train" / "localization.txt").exists()
    assert info.mask_metadata_dir("val") == meta / "val" and info.region_root is None
    assert (info.mask_root / "val/c1/v_ignore.png").is_file() and info.image_path("train", "train/c2/u.jpg").is_file()


# ----------------------------------------------------------------------------- custom and problems

def custom_dataset(tmp_path: Path):
    """(root, config) of a custom dataset folder: the small synth dataset, 3 classes of 96x96 images."""
    root = tmp_path / "mine"
    generate(config(**SMALL_SYNTH).datasets.synth, root)
    return root, config(**{"dataset": "custom", "datasets.custom.root": str(root)})


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_custom_dataset_folder_loads(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    layout = Layout(tmp_path / "project")
    acquire.download(cfg, layout)
    info = acquire.split(cfg, layout)
    image, label, image_id = SplitImages(info, "val", eval_transform(cfg.data))[3]
    assert image.shape == (3, cfg.data.crop, cfg.data.crop) and label == 1 and image_id == "images/val/blue-rectangle/0001.png"
    assert info.region_root is None  # region maps are the synth source's, not the custom layout's


def test_split_lists_every_problem_and_writes_nothing(tmp_path):
    cfg = config(**SMALL_SYNTH)
    layout = Layout(tmp_path)
    acquire.download(cfg, layout)
    raw = layout.raw("synth")
    (raw / "images/train/red-ellipse/0001.png").write_bytes(b"not a png")
    (raw / "images/test/blue-rectangle/0000.png").unlink()
    sizes = raw / "metadata/val/image_sizes.txt"
    sizes.write_text(sizes.read_text().replace("images/val/red-ellipse/0000.png,96,96", "images/val/red-ellipse/0000.png,90,96"))
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, layout)
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "train: image 'images/train/red-ellipse/0001.png'" in message and "cannot decode image" in message
    assert "test: image 'images/test/blue-rectangle/0000.png'" in message and "file is missing" in message
    assert "image_sizes.txt says (90, 96)" in message
    assert not layout.split("synth").exists()


def test_a_class_without_training_images_is_a_problem(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    shutil.rmtree(root / "metadata_masks")
    labels = root / "metadata/train/class_labels.txt"
    labels.write_text(labels.read_text().replace(",2\n", ",1\n"))
    with pytest.raises(DatasetError, match="train: class 2 has no image"):
        acquire.split(cfg, Layout(tmp_path))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # the header stays whole


def test_split_decodes_every_image_and_names_a_truncated_one(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    truncate(root / "images/test/red-ellipse/0001.png")
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, Layout(tmp_path / "project"))
    assert "1 problem(s)" in str(error.value)
    assert (f"test: image 'images/test/red-ellipse/0001.png': {root / 'images/test/red-ellipse/0001.png'}: "
            f"cannot decode image: image file is truncated") in str(error.value)


def test_split_refuses_a_box_outside_its_image(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    boxes = root / "metadata/val/localization.txt"
    first = lines(boxes)[0]
    assert first.startswith("images/val/red-ellipse/0000.png,")
    edit(boxes, first, "images/val/red-ellipse/0000.png,0,0,500,600")
    with pytest.raises(DatasetError, match=f"val: {boxes}: image 'images/val/red-ellipse/0000.png': "
                                           r"box \(0, 0, 500, 600\) is not inside the 96x96 image"):
        acquire.split(cfg, Layout(tmp_path / "project"))


def test_split_names_the_image_of_a_label_beyond_the_classes(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    shutil.rmtree(root / "metadata_masks")  # its labels would differ
    labels = root / "metadata/test/class_labels.txt"
    edit(labels, "images/test/blue-rectangle/0000.png,1", "images/test/blue-rectangle/0000.png,9")
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, Layout(tmp_path / "project"))
    assert "1 problem(s)" in str(error.value)  # not "class 3..9 has no image"
    assert (f"test: {labels}: image 'images/test/blue-rectangle/0000.png': label 9 is not a class "
            f"(3 classes: 0..2)") in str(error.value)


def test_split_lists_the_faults_of_every_split_at_once(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    shutil.rmtree(root / "metadata_masks")  # its labels would differ
    truncate(root / "images/train/red-ellipse/0002.png")
    edit(root / "metadata/val/localization.txt", "images/val/blue-rectangle/0001.png,",
         "images/val/blue-rectangle/0001.png,90,0,97,5\nimages/val/blue-rectangle/0001.png,")
    edit(root / "metadata/test/class_labels.txt", "images/test/red-ellipse/0000.png,0", "images/test/red-ellipse/0000.png,3")
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, Layout(tmp_path / "project"))
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "train: image 'images/train/red-ellipse/0002.png'" in message and "image file is truncated" in message
    assert "val: " in message and "image 'images/val/blue-rectangle/0001.png': box (90, 0, 97, 5)" in message
    assert "test: " in message and "image 'images/test/red-ellipse/0000.png': label 3 is not a class" in message
    assert message.index("train: ") < message.index("val: ") < message.index("test: ")


def test_split_lists_the_metadata_errors_of_every_split_at_once(tmp_path):
    root, cfg = custom_dataset(tmp_path)
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        (root / "metadata/val" / name).write_text("")
    edit(root / "metadata/test/image_sizes.txt", "images/test/red-ellipse/0000.png,96,96", "images/test/red-ellipse/0000.png,96")
    with pytest.raises(DatasetError) as error:
        acquire.split(cfg, Layout(tmp_path / "project"))
    message = str(error.value)
    assert "2 problem(s)" in message
    assert f"val: {root / 'metadata/val/image_ids.txt'}: no image ids (the file is empty)" in message
    assert f"test: {root / 'metadata/test/image_sizes.txt'}:" in message and "expected 3 comma-separated" in message


# ------------------------------------------------------------------------------------------ images

def grey16() -> np.ndarray:
    return np.array([[0, 255, 256, 32896, 65535]], np.uint16)


@pytest.mark.parametrize("name, make, expected", [
    # 16-bit grey (Pillow: mode I;16) keeps its high byte, as OpenCV reads it; not clipped to white
    ("grey16.png", lambda path: cv2.imwrite(str(path), grey16()), [[0, 0, 1, 128, 255]]),
    ("int32.tiff", lambda path: Image.fromarray(grey16().astype(np.int32)).save(path), [[0, 0, 1, 128, 255]]),
    ("float.tiff", lambda path: Image.fromarray(np.array([[0, 0.25, 1]], np.float32)).save(path), [[0, 64, 255]]),
    ("bits.png", lambda path: Image.fromarray(np.array([[0, 1]], bool)).save(path), [[0, 255]]),
    ("grey_alpha.png", lambda path: Image.fromarray(np.array([[[200, 0], [7, 255]]], np.uint8)).save(path),
     [[200, 7]]),
])
def test_grey_images_of_any_depth_load_as_8_bit_rgb(tmp_path, name, make, expected):
    make(tmp_path / name)
    image = np.asarray(load_rgb(tmp_path / name))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.repeat(np.array(expected, np.uint8)[..., None], 3, axis=-1))


def test_colour_images_of_any_mode_load_as_8_bit_rgb(tmp_path):
    bgr16 = np.array([[[0, 256, 65535], [514, 32896, 0]]], np.uint16)  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr16)
    palette = Image.frombytes("P", (2, 1), bytes([0, 1]))
    palette.putpalette([10, 20, 30, 40, 50, 60])
    palette.save(tmp_path / "palette.png")
    Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0])).save(tmp_path / "cmyk.tiff")
    expected = {"rgb16.png": [[255, 1, 0], [0, 128, 2]], "palette.png": [[10, 20, 30], [40, 50, 60]],
                "cmyk.tiff": [[255, 255, 255], [0, 255, 255]]}
    for name, rgb in expected.items():
        np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / name)), np.array([rgb], np.uint8), err_msg=name)


def test_a_float_image_outside_0_1_is_refused_by_name(tmp_path):
    Image.fromarray(np.array([[0, 2.5]], np.float32)).save(tmp_path / "hdr.tiff")
    with pytest.raises(ImageReadError, match=r"hdr.tiff \(image 'x'\): cannot decode image: mode F values must lie "
                                             r"in \[0, 1\], found 0.0..2.5"):
        load_rgb(tmp_path / "hdr.tiff", "x")


# ----------------------------------------------------------------------------------------- loading

@pytest.fixture(scope="module")
def synth_info(tmp_path_factory):
    layout = make_project(tmp_path_factory.mktemp("synth"), **SMALL_SYNTH)
    return load_config(layout.root / "params.yaml"), DatasetInfo.load(layout.split("synth"))


def test_training_never_reads_localization(synth_info, monkeypatch):
    cfg, info = synth_info

    def forbidden(*args, **kwargs):
        raise AssertionError("localization read while loading a training split")

    monkeypatch.setattr("pipeline.data.metadata.read_localization", forbidden)
    images = SplitImages(info, "train", train_transform(cfg.data))
    assert not hasattr(images, "boxes") and not hasattr(images, "masks")
    batch = next(iter(split_loader(info, "train", cfg.data, batch_size=4, train=True)))
    assert len(batch) == 3 and batch[0].shape == (4, 3, cfg.data.crop, cfg.data.crop)
    assert batch[1].dtype == torch.int64 and isinstance(batch[2][0], str)


def test_a_corrupt_image_is_an_error_naming_the_file(synth_info, tmp_path):
    cfg, info = synth_info
    broken = DatasetInfo(info.folder, info.name, info.num_classes, info.class_names,
                         {**info.image_roots, "test": tmp_path}, info.mask_root)
    first = info.metadata("test").image_ids[0]
    (tmp_path / first).parent.mkdir(parents=True)
    (tmp_path / first).write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError, match=f"{tmp_path / first} \\(image '{first}'\\): cannot decode image"):
        SplitImages(broken, "test", eval_transform(cfg.data))[0]


# -------------------------------------------------------------------------------- the prepare stage

def _same_samples(first, second, seed: int = 0) -> None:
    """Every sample of two datasets equal to the bit, each drawn after the same torch seed."""
    assert len(first) == len(second)
    for index in range(len(first)):
        torch.manual_seed(seed + index)
        image, label, image_id = first[index]
        torch.manual_seed(seed + index)
        other, other_label, other_id = second[index]
        assert (label, image_id) == (other_label, other_id)
        assert other.dtype == torch.float32 and torch.equal(image, other), f"{image_id}: differs"


@pytest.mark.parametrize("resize", [64, 56])  # crop 56: a random crop, then no crop draw at all
def test_prepared_arrays_give_the_file_paths_tensors_to_the_bit(synth_info, tmp_path, resize):
    cfg, info = synth_info
    data = cfg.data.model_copy(update={"resize": resize, "crop": 56})
    manifest = prepare_splits(info, data, tmp_path / "prepared")
    assert manifest["splits"]["train"]["size"] == resize and manifest["splits"]["val"]["size"] == 56
    train = np.load(tmp_path / "prepared" / "train.npy", mmap_mode="r")
    assert train.dtype == np.uint8 and train.shape == (len(info.metadata("train", "none")), resize, resize, 3)
    for split, train_mode in (("train", True), ("val", False)):
        from_files = split_images(info, split, data, train_mode)
        from_arrays = split_images(info, split, data, train_mode, tmp_path / "prepared")
        assert isinstance(from_arrays, PreparedImages) and not isinstance(from_files, PreparedImages)
        _same_samples(from_files, from_arrays)
    # the flips and crops vary: not every training sample is the same crop of its image
    torch.manual_seed(0)
    firsts = {split_images(info, "train", data, True, tmp_path / "prepared")[0][0].sum().item() for _ in range(8)}
    assert len(firsts) > 1 or resize == 56


def test_without_prepared_pixels_training_reads_the_files(synth_info, tmp_path):
    cfg, info = synth_info
    data = cfg.data.model_copy(update={"prepared": False})
    assert prepare_splits(info, data, tmp_path / "prepared") == {"pixels": False, "splits": {}}
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [MANIFEST, "prepared.json"]
    assert type(split_images(info, "train", data, True, tmp_path / "prepared")) is SplitImages


def test_a_stale_or_missing_prepared_folder_is_an_error_naming_the_manifest(synth_info, tmp_path):
    cfg, info = synth_info
    with pytest.raises(DatasetError, match=f"{tmp_path / 'prepared' / 'prepared.json'} is missing: run the prepare stage"):
        split_images(info, "train", cfg.data, True, tmp_path / "prepared")
    prepare_splits(info, cfg.data, tmp_path / "prepared")
    other = cfg.data.model_copy(update={"resize": cfg.data.resize + 8})
    with pytest.raises(DatasetError, match="prepared for other images or sizes than split 'train' at .* rerun the prepare stage"):
        split_images(info, "train", other, True, tmp_path / "prepared")
