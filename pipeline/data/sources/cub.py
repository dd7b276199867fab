"""CUB-200-2011 under the protocol: train-weaksup and test are the official train/test split of the
official archive; train-fullsup is CUBV2 (5 Flickr images per class) with clovaai/wsolevaluation's boxes."""

from __future__ import annotations

from pathlib import Path

from pipeline.settings.config import CubConfig
from pipeline.data.archives import extract
from pipeline.data.dataset_folder import DatasetError, DatasetTables, SplitTable
from pipeline.data.download import fetch as download
from pipeline.data.sources.common import fetch_metadata, locate, read_table
from pipeline.data.metadata import Box, load_metadata
from pipeline.dag.paths import Layout


def fetch(settings: CubConfig, layout: Layout) -> None:
    raw = layout.raw("cub")
    extract(download(settings.images, layout.downloads), raw)
    extract(download(settings.fullsup_images, layout.downloads), raw / "cubv2")
    fetch_metadata(settings.fullsup_metadata, layout.downloads, raw / "fullsup_metadata")


def official_splits(cub: Path) -> tuple[SplitTable, SplitTable, list[str]]:
    """(train, test) from CUB_200_2011/{images,image_class_labels,train_test_split,bounding_boxes,classes}.txt.

    Boxes: ``x y w h`` -> ``(int(x), int(y), int(x + w), int(y + h))``, as the protocol's metadata."""
    paths = {n: cub / f"{n}.txt" for n in ("images", "image_class_labels", "train_test_split", "bounding_boxes", "classes")}
    images = {n: name for n, name in read_table(paths["images"], 2)}
    labels = {n: int(c) - 1 for n, c in read_table(paths["image_class_labels"], 2)}
    is_train = {n: flag == "1" for n, flag in read_table(paths["train_test_split"], 2)}
    boxes: dict[str, tuple[Box, ...]] = {}
    for n, *xywh in read_table(paths["bounding_boxes"], 5):
        x, y, w, h = (float(v) for v in xywh)
        boxes[n] = ((int(x), int(y), int(x + w), int(y + h)),)
    for name, table in (("image_class_labels", labels), ("train_test_split", is_train), ("bounding_boxes", boxes)):
        missing = sorted(set(images) - set(table), key=int)
        if missing:
            raise DatasetError(f"{paths[name]}: no line for image number(s) {', '.join(missing[:5])} of {paths['images']}")
    names = [name for _, name in sorted(read_table(paths["classes"], 2), key=lambda row: int(row[0]))]
    root = cub / "images"

    def split_table(train: bool) -> SplitTable:
        numbers = [n for n in images if is_train[n] == train]
        ids = tuple(images[n] for n in numbers)
        return SplitTable(root, ids, {images[n]: labels[n] for n in numbers},
                          boxes={images[n]: boxes[n] for n in numbers})

    return split_table(True), split_table(False), names


def tables(settings: CubConfig, layout: Layout) -> DatasetTables:
    raw = layout.raw("cub")
    train, test, names = official_splits(locate(raw, "images.txt"))
    fullsup = load_metadata(raw / "fullsup_metadata", "boxes")
    val = SplitTable(locate(raw / "cubv2", fullsup.image_ids[0]), fullsup.image_ids, fullsup.class_labels,
                     fullsup.image_sizes, fullsup.boxes)
    return DatasetTables("cub", {"train": train, "val": val, "test": test}, names)
