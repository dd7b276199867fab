"""OpenImages30k, the protocol's mask dataset (PxAP): 100 classes; train-weaksup (no masks),
train-fullsup and test with instance masks and ignore regions, metadata from clovaai/wsolevaluation.
Its image_sizes.txt files are empty: sizes are read from the images."""

from __future__ import annotations

from pipeline.settings.config import SPLITS, OpenImagesConfig
from pipeline.data.archives import extract
from pipeline.data.dataset_folder import DatasetTables, SplitTable
from pipeline.data.download import fetch as download
from pipeline.data.sources.common import fetch_metadata, locate
from pipeline.data.metadata import read_image_ids, read_labels, read_localization
from pipeline.dag.paths import Layout


def fetch(settings: OpenImagesConfig, layout: Layout) -> None:
    raw = layout.raw("openimages")
    extract(download(settings.images, layout.downloads), raw / "images")
    extract(download(settings.masks, layout.downloads), raw / "masks")
    for split in SPLITS:
        fetch_metadata(settings.metadata[split], layout.downloads, raw / "metadata" / split)  # type: ignore[index]  # SPLITS


def tables(settings: OpenImagesConfig, layout: Layout) -> DatasetTables:
    raw = layout.raw("openimages")
    splits, mask_root = {}, None
    for split in SPLITS:
        folder = raw / "metadata" / split
        ids = read_image_ids(folder / "image_ids.txt")
        labels = read_labels(folder / "class_labels.txt", ids)
        masks = None
        if split != "train":  # the protocol gives train-weaksup no masks
            masks = read_localization(folder / "localization.txt", ids, "masks")
            mask_root = mask_root or locate(raw / "masks", masks[ids[0]].masks[0])
        splits[split] = SplitTable(locate(raw / "images", ids[0]), ids, labels, masks=masks)
    return DatasetTables("openimages", splits, mask_root=mask_root)
