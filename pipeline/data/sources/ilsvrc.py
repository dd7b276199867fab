"""ILSVRC (ImageNet-1k) under the protocol: train-weaksup is the official train set and test the
official val set with its box XMLs, both from the user's local copy (it needs a login to download);
train-fullsup is ImageNetV2 threshold-0.7 (10 per class) with clovaai/wsolevaluation's boxes.

Class k is the k-th wnid of ``<root>/train`` in sorted order (the order the protocol's labels use).
DVC does not watch the local copy: after changing it, rerun the split stage (``dvc repro -f split``).
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from pipeline.settings.config import IlsvrcConfig
from pipeline.data.archives import extract
from pipeline.data.dataset_folder import DatasetError, DatasetTables, SplitTable
from pipeline.data.download import fetch as download
from pipeline.data.sources.common import fetch_metadata, locate
from pipeline.data.metadata import load_metadata
from pipeline.dag.paths import Layout

FULLSUP_FOLDER = "val2"  # train-fullsup ids are "val2/<class>/<n>.jpeg"


def _local(settings: IlsvrcConfig) -> tuple[Path, Path]:
    if settings.root is None or settings.val_annotations is None:
        raise DatasetError("datasets.ilsvrc.root and datasets.ilsvrc.val_annotations must name your local ImageNet "
                           "copy and its val box XMLs in params.yaml")
    root, annotations = Path(settings.root).expanduser().resolve(), Path(settings.val_annotations).expanduser().resolve()
    for path, what in ((root / "train", "datasets.ilsvrc.root: train/<wnid>/*.JPEG"),
                       (root / "val", "datasets.ilsvrc.root: val/*.JPEG"), (annotations, "datasets.ilsvrc.val_annotations")):
        if not path.is_dir():
            raise DatasetError(f"{what}: {path} is not a folder")
    return root, annotations


def fetch(settings: IlsvrcConfig, layout: Layout) -> None:
    root, annotations = _local(settings)
    raw = layout.raw("ilsvrc")
    unpacked = raw / ".imagenetv2"
    extract(download(settings.fullsup_images, layout.downloads), unpacked)
    entries = list(unpacked.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked  # the tarball's own top folder
    shutil.rmtree(raw / FULLSUP_FOLDER, ignore_errors=True)
    top.replace(raw / FULLSUP_FOLDER)
    shutil.rmtree(unpacked, ignore_errors=True)
    fetch_metadata(settings.fullsup_metadata, layout.downloads, raw / "fullsup_metadata")
    (raw / "source.json").write_text(json.dumps({"root": str(root), "val_annotations": str(annotations)}, indent=2) + "\n")


def _val_annotation(path: Path, classes: dict[str, int]) -> tuple[str, int, tuple[int, int], tuple]:
    """(image id, label, (width, height), boxes) of one official val XML."""
    try:
        tree = ElementTree.parse(path).getroot()
        filename = tree.findtext("filename")
        size = (int(tree.findtext("size/width", "")), int(tree.findtext("size/height", "")))
        objects = [(o.findtext("name", ""), tuple(int(float(o.findtext(f"bndbox/{k}", "")))
                                                  for k in ("xmin", "ymin", "xmax", "ymax")))
                   for o in tree.iter("object")]
    except (ElementTree.ParseError, TypeError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable ImageNet annotation: {error}") from None
    if not objects:
        raise DatasetError(f"{path}: no <object>")
    wnids = {name for name, _ in objects}
    if len(wnids) != 1 or next(iter(wnids)) not in classes:
        raise DatasetError(f"{path}: objects name {sorted(wnids)}, expected one wnid of the train folders")
    return f"val/{filename}.JPEG", classes[objects[0][0]], size, tuple(box for _, box in objects)


def tables(settings: IlsvrcConfig, layout: Layout) -> DatasetTables:
    root, annotations = _local(settings)
    wnids = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    classes = {wnid: k for k, wnid in enumerate(wnids)}
    train_ids, train_labels = [], {}
    for wnid in wnids:
        for image in sorted((root / "train" / wnid).iterdir()):
            image_id = f"train/{wnid}/{image.name}"
            train_ids.append(image_id)
            train_labels[image_id] = classes[wnid]
    test = [_val_annotation(p, classes) for p in sorted(annotations.glob("*.xml"))]
    if not test:
        raise DatasetError(f"datasets.ilsvrc.val_annotations: no .xml file in {annotations}")
    fullsup = load_metadata(layout.raw("ilsvrc") / "fullsup_metadata", "boxes")
    splits = {
        "train": SplitTable(root, tuple(train_ids), train_labels),
        "val": SplitTable(locate(layout.raw("ilsvrc"), fullsup.image_ids[0]), fullsup.image_ids,
                          fullsup.class_labels, fullsup.image_sizes, fullsup.boxes),
        "test": SplitTable(root, tuple(t[0] for t in test), {t[0]: t[1] for t in test}, {t[0]: t[2] for t in test},
                           {t[0]: t[3] for t in test}),
    }
    return DatasetTables("ilsvrc", splits, wnids)
