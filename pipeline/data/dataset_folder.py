"""The one on-disk form of every dataset, written by the split stage and read by all later ones.

    data/splits/<dataset>/
        dataset.json                 name, classes, and where each split's images (masks, region
                                     maps) are
        metadata/<split>/            image_ids, class_labels, image_sizes, localization (.txt), in the
                                     clovaai/wsolevaluation format; train may lack localization
        metadata_masks/<split>/      masks as well, for datasets that have both (synth)

Image ids are paths relative to their split's image root; mask paths relative to the mask root.
A dataset may have region maps (synth): one uint8 PNG per image, the size of the image, at
:func:`region_map_path` under the region root; every other dataset's region root is null.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Literal
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings.config import SPLITS
from pipeline.data.images import ImageReadError, measure
from pipeline.errors import PipelineError
from pipeline.data.metadata import (Box, MaskFiles, Metadata, MetadataError, box_faults, inside, load_metadata, metadata_lines,
                               write_metadata)
from pipeline.dag.paths import replaced_atomically

INFO = "dataset.json"
SHOWN_PROBLEMS = 50  # problems listed in full before "and N more"


class DatasetError(PipelineError, RuntimeError):
    """The dataset's files do not match its metadata; the message lists every problem found."""

    @classmethod
    def listing(cls, name: str, problems: list[str]) -> DatasetError:
        """One error for all problems of a dataset (the first SHOWN_PROBLEMS in full)."""
        more = [f"... and {len(problems) - SHOWN_PROBLEMS} more"] if len(problems) > SHOWN_PROBLEMS else []
        return cls(f"{name}: {len(problems)} problem(s) found; nothing was written:\n  "
                   + "\n  ".join(problems[:SHOWN_PROBLEMS] + more))


@dataclass
class SplitTable:
    """One split as a dataset source describes it. ``sizes`` None: read from the image files."""

    image_root: Path
    image_ids: tuple[str, ...]
    labels: dict[str, int]
    sizes: dict[str, tuple[int, int]] | None = None
    boxes: dict[str, tuple[Box, ...]] | None = None
    masks: dict[str, MaskFiles] | None = None  # paths relative to the dataset's mask root
    metadata: Path | None = None  # the metadata folder the table was read from, named in problems

    def file(self, name: str, line: int | None = None) -> str:
        """Where a problem with one of the split's metadata files lies, as ``"<path>: "`` or
        ``"<path>:<line>: "`` (or "")."""
        if self.metadata is None:
            return ""
        return f"{self.metadata / name}:{line}: " if line is not None else f"{self.metadata / name}: "


@dataclass
class DatasetTables:
    """Everything the split stage needs from a dataset source."""

    name: str
    splits: dict[str, SplitTable]
    class_names: list[str] | None = None
    mask_root: Path | None = None
    extra_masks: dict[str, dict[str, MaskFiles]] = field(default_factory=dict)  # split -> masks, beside boxes
    region_root: Path | None = None  # region maps of every image, at region_map_path


@dataclass(frozen=True)
class DatasetInfo:
    """A written dataset folder, as the training and evaluation stages see it."""

    folder: Path
    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_roots: dict[str, Path]
    mask_root: Path | None
    region_root: Path | None = None  # region maps, at region_map_path; None when the dataset has none

    @classmethod
    def load(cls, folder: str | Path) -> DatasetInfo:
        folder = Path(folder)
        path = folder / INFO
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing: run the split stage (dvc repro split)") from None
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON: {error}") from None
        mask_root, region_root = info.get("mask_root"), info.get("region_root")
        return cls(folder, info["name"], info["num_classes"], tuple(info["class_names"]),
                   {s: (folder / r).resolve() for s, r in info["image_roots"].items()},
                   (folder / mask_root).resolve() if mask_root else None,
                   (folder / region_root).resolve() if region_root else None)

    def metadata_dir(self, split: str) -> Path:
        return self.folder / "metadata" / split

    def mask_metadata_dir(self, split: str) -> Path | None:
        """Metadata whose localization.txt holds masks, if the dataset has masks for the split."""
        for folder in (self.folder / "metadata_masks" / split, self.metadata_dir(split)):
            loc = folder / "localization.txt"
            first = next((line for _, line in metadata_lines(loc)), "") if loc.is_file() else ""
            if len(first.split(",")) == 3:
                return folder
        return None

    def metadata(self, split: str, localization: Literal["auto", "boxes", "masks", "none"] = "auto") -> Metadata:
        return load_metadata(self.metadata_dir(split), localization)

    def image_path(self, split: str, image_id: str) -> Path:
        return self.image_roots[split] / image_id


def region_map_path(region_root: Path, image_id: str) -> Path:
    """The region map of an image: the image id under the region root, as a .png."""
    return (region_root / image_id).with_suffix(".png")


def _relative(target: Path, start: Path) -> str:
    """target relative to start when both lie on one tree; absolute otherwise (an external copy)."""
    try:
        return os.path.relpath(target.resolve(), start.resolve())
    except ValueError:
        return str(target.resolve())


def _under(root: Path, names: Iterable[str], where: Callable[[int], str], problems: list[str]) -> dict[str, Path]:
    """name -> ``root / name`` for each name (an image id, a mask path) that names a file under root
    (:func:`pipeline.data.metadata.inside`); the others are problems, ``where(line)`` saying where each was read."""
    paths = {}
    for line, name in enumerate(names, start=1):
        try:
            paths[name] = inside(root, name, where(line))
        except MetadataError as error:
            problems.append(str(error))
    return paths


def _check_split(split: str, table: SplitTable, num_classes: int, mask_root: Path | None,
                 extra: dict[str, MaskFiles] | None, region_root: Path | None,
                 problems: list[str]) -> dict[str, tuple[int, int]]:
    """Measured (width, height) of every image of the split, each decoded once; problems appended."""
    if not table.image_ids:
        problems.append(f"{split}: {table.file('image_ids.txt')}no images")
    problems += [f"{split}: {table.file('class_labels.txt')}image {image_id!r}: label {label} is not a class "
                 f"({num_classes} classes: 0..{num_classes - 1})"
                 for image_id, label in table.labels.items() if not 0 <= label < num_classes]
    sizes = {}
    images = _under(table.image_root, table.image_ids,
                    lambda line: f"{split}: {table.file('image_ids.txt', line)}image id", problems)
    for (image_id, path), result in zip(images.items(), measure(images.values())):
        if isinstance(result, ImageReadError):
            problems.append(f"{split}: image {image_id!r}: {result}")
            continue
        sizes[image_id] = result
        if table.sizes is not None and table.sizes[image_id] != result:
            problems.append(f"{split}: image {image_id!r}: image_sizes.txt says {table.sizes[image_id]}, "
                            f"the file {path} is {result}")
    if table.boxes is not None:
        problems += [f"{split}: {table.file('localization.txt')}{fault}" for fault in box_faults(table.boxes, sizes)]
    for masks in (table.masks, extra):
        if not masks:
            continue
        assert mask_root is not None  # a split with masks has a mask root
        named = _under(mask_root, sorted({m for files in masks.values() for m in (*files.masks, files.ignore) if m}),
                       lambda _: f"{split}: {table.file('localization.txt')}mask path", problems)
        for name, result in zip(named, measure(named.values())):
            if isinstance(result, ImageReadError):
                problems.append(f"{split}: mask {name!r}: {result}")
    if region_root is not None:
        regions = [region_map_path(region_root, i) for i in images]
        for image_id, path, result in zip(images, regions, measure(regions)):
            if isinstance(result, ImageReadError):
                problems.append(f"{split}: region map of image {image_id!r}: {result}")
            elif image_id in sizes and result != sizes[image_id]:
                problems.append(f"{split}: region map of image {image_id!r}: {path} is {result}, "
                                f"the image is {sizes[image_id]}")
    return sizes


def write_dataset(tables: DatasetTables, out: Path) -> DatasetInfo:
    """Decode every image (mask, region map) file once, then write the dataset folder atomically.

    The classes are those named, else 0..(largest training label). Every problem found (missing,
    unreadable or truncated file, size contradicting the metadata, box outside its image, label
    outside the classes, empty split, class without training images) is listed in one
    :class:`DatasetError`, split by split."""
    trained = set(tables.splits["train"].labels.values())
    num_classes = len(tables.class_names) if tables.class_names is not None else max(trained, default=-1) + 1
    problems = [f"train: class {c} has no image" for c in range(num_classes) if c not in trained]
    measured = {split: _check_split(split, table, num_classes, tables.mask_root, tables.extra_masks.get(split),
                                    tables.region_root, problems)
                for split, table in tables.splits.items()}
    if problems:
        raise DatasetError.listing(tables.name, problems)

    names = tables.class_names or [str(c) for c in range(num_classes)]
    info = {
        "name": tables.name,
        "num_classes": num_classes,
        "class_names": names,
        "images": {split: len(tables.splits[split].image_ids) for split in SPLITS},
        # relative to this folder once it is in place, i.e. from out
        "image_roots": {split: _relative(tables.splits[split].image_root, out) for split in SPLITS},
        "mask_root": _relative(tables.mask_root, out) if tables.mask_root is not None else None,
        "region_root": _relative(tables.region_root, out) if tables.region_root is not None else None,
    }
    with replaced_atomically(out, force=True) as staging:  # the stage's own folder
        for split in SPLITS:
            table = tables.splits[split]
            write_metadata(Metadata(staging, table.image_ids, table.labels, measured[split], boxes=table.boxes,
                                    masks=table.masks), staging / "metadata" / split)
            if split in tables.extra_masks:
                write_metadata(Metadata(staging, table.image_ids, table.labels, measured[split],
                                        masks=tables.extra_masks[split]), staging / "metadata_masks" / split)
        (staging / INFO).write_text(json.dumps(info, indent=2) + "\n")
        for split in SPLITS:  # read back what was written: the loaders' own validation
            load_metadata(staging / "metadata" / split, "none" if split == "train" else "auto")
    return DatasetInfo.load(out)
