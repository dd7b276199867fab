"""The prepared form of the splits training reads: each image decoded and resized once, stored as one
memory-mappable uint8 array per split, so a training step needs no decode.

    data/prepared/<dataset>/prepared.json   what was prepared: sizes, image counts, a digest of the ids
    data/prepared/<dataset>/train.npy       (N, resize, resize, 3) uint8: train-weaksup at data.resize
    data/prepared/<dataset>/val.npy         (N, crop, crop, 3) uint8: train-fullsup at data.crop

The resize is the loader's own (torchvision ``Resize`` on the decoded PIL image), so the random crop,
flip and normalisation applied to these arrays give the tensors the file path gives, to the bit
(tests/test_datasets.py). With ``data.prepared: false`` (sets that do not fit: ImageNet's 1.28 M
images are ~250 GB at 256 px) the stage writes the manifest alone and training decodes the files.
The test split is always read from its files: the evaluate stage decodes it once per run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torchvision import transforms

from pipeline.settings.config import DataConfig
from pipeline.data.dataset_folder import DatasetError, DatasetInfo
from pipeline.data.images import load_rgb
from pipeline.dag.paths import replaced_atomically

log = logging.getLogger(__name__)

MANIFEST = "prepared.json"
SPLITS = ("train", "val")  # what training reads (test: the evaluate stage, from files)


def stored_size(split: str, data: DataConfig) -> int:
    """The side (px) a split is stored at: the train transform's resize, the test transform's crop."""
    return data.resize if split == "train" else data.crop


def _ids_digest(image_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def prepare_splits(info: DatasetInfo, data: DataConfig, out: Path, threads: int = 4) -> dict:
    """Write ``out`` (atomically): the manifest, and with ``data.prepared`` each split's array, images
    decoded and resized by ``threads`` threads. Returns the manifest."""
    manifest: dict[str, Any] = {"pixels": data.prepared, "splits": {}}
    with replaced_atomically(out, force=True) as staging:  # the stage's own folder
        if data.prepared:
            for split in SPLITS:
                image_ids = info.metadata(split, localization="none").image_ids
                size = stored_size(split, data)
                resize = transforms.Resize((size, size))
                array = np.lib.format.open_memmap(staging / f"{split}.npy", mode="w+", dtype=np.uint8,
                                                  shape=(len(image_ids), size, size, 3))

                def decoded(image_id: str) -> np.ndarray:
                    return np.asarray(resize(load_rgb(info.image_path(split, image_id), image_id)))

                with ThreadPoolExecutor(max_workers=threads) as pool:
                    for index, pixels in enumerate(pool.map(decoded, image_ids)):
                        array[index] = pixels
                array.flush()
                del array
                manifest["splits"][split] = {"images": len(image_ids), "size": size, "ids_sha256": _ids_digest(image_ids)}
                log.info("prepared %s: %d images at %d px (%.1f MB)", split, len(image_ids), size,
                         len(image_ids) * size * size * 3 / 1e6)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def prepared_array(folder: Path, split: str, image_ids: Sequence[str], data: DataConfig) -> np.ndarray | None:
    """The split's (N, S, S, 3) uint8 array, memory-mapped read-only, or None when ``folder`` holds no
    pixels (``data.prepared: false``). A manifest that does not match the split's ids or this ``data``'s
    sizes is an error naming the file: the prepare stage is stale."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing: run the prepare stage (dvc repro prepare)") from None
    if not manifest["pixels"]:
        return None
    entry = manifest["splits"].get(split)
    size = stored_size(split, data)
    stale = (entry is None or entry["size"] != size or entry["images"] != len(image_ids)
             or entry["ids_sha256"] != _ids_digest(image_ids))
    if stale:
        raise DatasetError(f"{path}: prepared for other images or sizes than split {split!r} at {size} px: "
                           "rerun the prepare stage (dvc repro prepare)")
    return np.load(folder / f"{split}.npy", mmap_mode="r")
