"""Images of a split as tensors, with the paper's transforms (Sec. 4.1).

Train: resize to (resize, resize), random crop to crop, horizontal flip, ImageNet normalisation.
Test (val and test): resize to (crop, crop), normalisation. A split yields (image, label, image id)
and nothing else: localization (boxes, masks) is never read here, so training cannot see it.

Two sources give the same tensors: the image files (decoded each time), or the prepare stage's
uint8 arrays (pipeline/data/prepared.py: resized once, so a sample is a slice, a flip and a
normalisation, with the same random draws as the file path's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from pipeline.settings.config import DataConfig
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.images import load_rgb
from pipeline.data.prepared import prepared_array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _augment(data: DataConfig) -> list:
    return [transforms.RandomCrop(data.crop), transforms.RandomHorizontalFlip()]


def _normalise() -> list:
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(data: DataConfig) -> transforms.Compose:
    return transforms.Compose([transforms.Resize((data.resize, data.resize)), *_augment(data), *_normalise()])


def eval_transform(data: DataConfig) -> transforms.Compose:
    return transforms.Compose([transforms.Resize((data.crop, data.crop)), *_normalise()])


class PreparedTransform:
    """The rest of train_transform / eval_transform for a (S, S, 3) uint8 image already resized (a
    row of the prepare stage's array): train: RandomCrop's and RandomHorizontalFlip's draws, in their
    order, then the crop and flip on the uint8 pixels; then ToTensor's and Normalize's arithmetic
    (``/ 255``, ``- mean``, ``/ std``), in place. Only the crop is copied out of the array."""

    def __init__(self, data: DataConfig, train: bool):
        self.crop = data.crop if train else None
        self.mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        self.std = torch.tensor(IMAGENET_STD)[:, None, None]

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        if self.crop is not None:
            side = pixels.shape[0]
            top = left = 0
            if side != self.crop:  # as RandomCrop.get_params: no draw when the image is the crop's size
                top = int(torch.randint(0, side - self.crop + 1, size=(1,)))
                left = int(torch.randint(0, side - self.crop + 1, size=(1,)))
            pixels = pixels[top:top + self.crop, left:left + self.crop]
            if torch.rand(1) < 0.5:  # RandomHorizontalFlip(p=0.5)
                pixels = pixels[:, ::-1]
        image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).contiguous()  # a writable copy of the crop
        return image.float().div_(255).sub_(self.mean).div_(self.std)


class SplitImages(Dataset):
    """(image (3, H, W) float, label, image id) for each image of one split, in metadata order."""

    def __init__(self, info: DatasetInfo, split: str, transform: transforms.Compose):
        metadata = info.metadata(split, localization="none")
        self.image_ids = metadata.image_ids
        self.labels = [metadata.class_labels[i] for i in self.image_ids]
        self.root = info.image_roots[split]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image_id = self.image_ids[index]
        return self.transform(load_rgb(self.root / image_id, image_id)), self.labels[index], image_id


class PreparedImages(SplitImages):
    """The same samples as :class:`SplitImages`, from the prepare stage's memory-mapped uint8 array."""

    def __init__(self, info: DatasetInfo, split: str, pixels: np.ndarray, transform: PreparedTransform):
        super().__init__(info, split, transform)
        self.pixels = pixels  # (N, S, S, 3) uint8, in metadata order

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return self.transform(self.pixels[index]), self.labels[index], self.image_ids[index]


def split_images(info: DatasetInfo, split: str, data: DataConfig, train: bool, prepared: Path | None = None) -> SplitImages:
    """A split's samples: from ``prepared`` (the prepare stage's folder) when it holds the split's
    pixels, else decoded from the image files."""
    if prepared is not None:
        image_ids = info.metadata(split, localization="none").image_ids
        pixels = prepared_array(prepared, split, image_ids, data)
        if pixels is not None:
            return PreparedImages(info, split, pixels, PreparedTransform(data, train))
    return SplitImages(info, split, train_transform(data) if train else eval_transform(data))


def split_loader(info: DatasetInfo, split: str, data: DataConfig, batch_size: int, train: bool,
                 prepared: Path | None = None) -> DataLoader:
    """Shuffled, augmented batches for training; ordered, plain ones otherwise; ``data.loader_workers``
    processes each keeping ``data.prefetch_batches`` batches ready."""
    images = split_images(info, split, data, train, prepared)
    workers = data.loader_workers
    return DataLoader(images, batch_size=batch_size, shuffle=train, drop_last=train and len(images) >= batch_size,
                      num_workers=workers, pin_memory=data.pin_memory, persistent_workers=workers > 0,
                      prefetch_factor=data.prefetch_batches if workers > 0 else None)
