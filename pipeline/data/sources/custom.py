"""A dataset brought by the user, already in the wsolevaluation layout:
``<root>/metadata/{train,val,test}/*.txt`` with image ids (and mask paths) relative to <root>,
optionally ``<root>/metadata_masks/{val,test}/`` for masks beside boxes and ``<root>/classes.txt``.
Every text file is UTF-8; an id or mask path that leads out of <root> is refused (pipeline/data/metadata.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.settings.config import SPLITS, CustomConfig
from pipeline.data.dataset_folder import DatasetError, DatasetTables, SplitTable
from pipeline.data.metadata import (MetadataError, load_metadata, metadata_lines, read_image_ids, read_labels,
                               read_localization)
from pipeline.dag.paths import Layout


def _root(settings: CustomConfig) -> Path:
    if settings.root is None:
        raise DatasetError("datasets.custom.root is null: set it to your dataset folder in params.yaml")
    root = Path(settings.root).expanduser().resolve()
    if not (root / "metadata").is_dir():
        raise DatasetError(f"datasets.custom.root: {root} has no metadata/ folder (metadata/{{train,val,test}}/*.txt)")
    return root


def fetch(settings: CustomConfig, layout: Layout) -> None:
    """Nothing to download: records where the dataset is (DVC does not watch a folder outside the project)."""
    raw = layout.raw("custom")
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "source.json").write_text(json.dumps({"root": str(_root(settings))}, indent=2) + "\n")


def folder_tables(name: str, root: Path) -> DatasetTables:
    """Tables of a folder in the custom layout (also what the synth generator writes). The metadata
    errors of all splits are listed in one :class:`DatasetError`; boxes are left for the split stage
    to check against the decoded images."""
    splits, problems = {}, []
    for split in SPLITS:
        folder = root / "metadata" / split
        has_localization = (folder / "localization.txt").is_file()
        try:
            metadata = load_metadata(folder, "auto" if split != "train" or has_localization else "none",
                                     check_boxes=False)
        except MetadataError as error:
            problems.append(f"{split}: {error}")
            continue
        splits[split] = SplitTable(root, metadata.image_ids, metadata.class_labels, metadata.image_sizes,
                                   metadata.boxes, metadata.masks, folder)
    if problems:
        raise DatasetError.listing(name, problems)
    extra = {}
    for split in SPLITS:
        folder = root / "metadata_masks" / split
        if folder.is_dir():
            ids = read_image_ids(folder / "image_ids.txt")
            if ids != splits[split].image_ids or read_labels(folder / "class_labels.txt", ids) != splits[split].labels:
                raise DatasetError(f"{folder}: its images or labels differ from {root / 'metadata' / split}")
            extra[split] = read_localization(folder / "localization.txt", ids, "masks")
    names_file = root / "classes.txt"
    names = [name for _, line in metadata_lines(names_file) for name in line.split()] if names_file.is_file() else None
    has_masks = bool(extra) or any(t.masks for t in splits.values())
    return DatasetTables(name, splits, names, root if has_masks else None, extra)


def tables(settings: CustomConfig, layout: Layout) -> DatasetTables:
    return folder_tables("custom", _root(settings))
