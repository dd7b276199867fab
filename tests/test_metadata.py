"""Metadata reading: the reference's format, and clear errors for every kind of bad file."""

import pytest

from pipeline.data.metadata import MetadataError, load_metadata
from pipeline.metrics.scoremap_folder import evaluate_scoremap_folder
from tests.helpers import write_box_metadata

IMAGES = {"a/1.jpg": (0, (500, 300), [(1, 2, 30, 40), (5, 5, 9, 9)]), "b/2.jpg": (3, (20, 10), [(0, 0, 19, 9)])}


def test_reads_boxes_labels_and_sizes(tmp_path):
    metadata = load_metadata(write_box_metadata(tmp_path, IMAGES))
    assert metadata.image_ids == ("a/1.jpg", "b/2.jpg")
    assert metadata.class_labels == {"a/1.jpg": 0, "b/2.jpg": 3}
    assert metadata.image_sizes == {"a/1.jpg": (500, 300), "b/2.jpg": (20, 10)}
    assert metadata.boxes == {"a/1.jpg": ((1, 2, 30, 40), (5, 5, 9, 9)), "b/2.jpg": ((0, 0, 19, 9),)}


def test_reads_masks_with_ignore_on_first_line(tmp_path):
    write_box_metadata(tmp_path, IMAGES)
    (tmp_path / "localization.txt").write_text("a/1.jpg,m/a1.png,m/a_ignore.png\na/1.jpg,m/a2.png,\nb/2.jpg,m/b.png,\n")
    metadata = load_metadata(tmp_path)
    assert metadata.boxes is None
    assert metadata.masks["a/1.jpg"].masks == ("m/a1.png", "m/a2.png")
    assert metadata.masks["a/1.jpg"].ignore == "m/a_ignore.png"
    assert metadata.masks["b/2.jpg"].ignore == ""


@pytest.mark.parametrize("file, content, message", [
    ("localization.txt", "a/1.jpg,1,2,30\nb/2.jpg,0,0,19,9\n", r"localization.txt:1: expected 5 .* found 4"),
    ("localization.txt", "a/1.jpg,1,2,30,40\nb/2.jpg,-1,0,19,9\n", r"localization.txt:2: image 'b/2.jpg': negative"),
    ("localization.txt", "a/1.jpg,31,2,30,40\nb/2.jpg,0,0,19,9\n", r"localization.txt:1: image 'a/1.jpg': inverted"),
    ("localization.txt", "a/1.jpg,1,2,30,4x\nb/2.jpg,0,0,19,9\n", r"localization.txt:1: image 'a/1.jpg': y1 must be"),
    ("localization.txt", "a/1.jpg,1,2,30,40\n", r"localization.txt: no line for image 'b/2.jpg'"),
    ("localization.txt", "a/1.jpg,1,2,30,40\nb/2.jpg,0,0,19,9\nc.jpg,0,0,1,1\n",
     r"localization.txt:3: image 'c.jpg' is not listed"),
    ("image_ids.txt", "a/1.jpg\nb/2.jpg\na/1.jpg\n", r"image_ids.txt:3: duplicate image id 'a/1.jpg' \(first on line 1\)"),
    ("class_labels.txt", "a/1.jpg,0\nb/2.jpg,3\nb/2.jpg,3\n", r"class_labels.txt:3: duplicate image id 'b/2.jpg'"),
    ("class_labels.txt", "a/1.jpg\nb/2.jpg,3\n", r"class_labels.txt:1: expected 2 .* found 1"),
    ("class_labels.txt", "a/1.jpg,0\n", r"class_labels.txt: no line for image 'b/2.jpg'"),
    ("image_sizes.txt", "a/1.jpg,500,0\nb/2.jpg,20,10\n", r"image_sizes.txt:1: image 'a/1.jpg': size must be positive"),
    ("image_sizes.txt", "a/1.jpg,500,300\n", r"image_sizes.txt: no line for image 'b/2.jpg'"),
])
def test_bad_metadata_names_file_line_and_image(tmp_path, file, content, message):
    write_box_metadata(tmp_path, IMAGES)
    (tmp_path / file).write_text(content)
    with pytest.raises(MetadataError, match=message):
        load_metadata(tmp_path)


def test_missing_file_is_named(tmp_path):
    write_box_metadata(tmp_path, IMAGES)
    (tmp_path / "image_sizes.txt").unlink()
    with pytest.raises(MetadataError, match=r"image_sizes.txt: metadata file is missing"):
        load_metadata(tmp_path)


def test_ignore_mask_on_a_later_line_is_an_error(tmp_path):
    write_box_metadata(tmp_path, IMAGES)
    (tmp_path / "localization.txt").write_text("a/1.jpg,m/a1.png,\na/1.jpg,m/a2.png,m/ig.png\nb/2.jpg,m/b.png,\n")
    with pytest.raises(MetadataError, match=r"localization.txt:2: image 'a/1.jpg': the ignore mask"):
        load_metadata(tmp_path)


def test_boxes_outside_their_image_are_listed_together(tmp_path):
    images = {**IMAGES, "edge.jpg": (0, (500, 300), [(0, 0, 500, 300)]),  # touching the edges: inside
              "c.jpg": (1, (96, 96), [(0, 0, 500, 600), (1, 1, 5, 5)]), "d.jpg": (2, (20, 10), [(3, 2, 20, 11)])}
    write_box_metadata(tmp_path, images)
    with pytest.raises(MetadataError) as error:
        load_metadata(tmp_path)
    assert str(error.value).splitlines() == [
        f"{tmp_path / 'localization.txt'}: 2 box(es) outside their image (image_sizes.txt):",
        "  image 'c.jpg': box (0, 0, 500, 600) is not inside the 96x96 image",
        "  image 'd.jpg': box (3, 2, 20, 11) is not inside the 20x10 image"]
    assert load_metadata(tmp_path, "none").image_sizes["c.jpg"] == (96, 96)  # training reads no boxes


def test_the_list_of_boxes_outside_their_image_is_capped(tmp_path):
    write_box_metadata(tmp_path, {f"{i}.jpg": (0, (10, 10), [(0, 0, 11, 10)]) for i in range(25)})
    with pytest.raises(MetadataError, match=r"25 box\(es\)") as error:
        load_metadata(tmp_path)
    assert len(str(error.value).splitlines()) == 1 + 20 + 1 and str(error.value).endswith("... and 5 more")


def test_evaluate_scoremaps_refuses_a_box_outside_its_image(tmp_path):
    write_box_metadata(tmp_path / "meta", {"a.jpg": (0, (96, 96), [(0, 0, 500, 600)])})
    with pytest.raises(MetadataError, match=r"image 'a.jpg': box \(0, 0, 500, 600\) is not inside the 96x96 image"):
        evaluate_scoremap_folder(tmp_path / "meta", tmp_path / "scoremaps")


def test_empty_metadata_names_the_file(tmp_path):
    write_box_metadata(tmp_path / "meta", {})
    with pytest.raises(MetadataError, match=f"{tmp_path / 'meta' / 'image_ids.txt'}: no image ids"):
        evaluate_scoremap_folder(tmp_path / "meta", tmp_path / "scoremaps")
