"""Images of a split as tensors, with the paper's transforms (Sec. 4.1).

Train: resize to (resize, resize), random crop to crop, horizontal flip, ImageNet normalisation.
Test (val and test): resize to (crop, crop), normalisation. A split yields (image, label, image id)
and nothing else: localization (boxes, masks) is never read here, so training cannot see it.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from pipeline.config import DataConfig
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.images import load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(data: DataConfig) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize((data.resize, data.resize)), transforms.RandomCrop(data.crop),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(data: DataConfig) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize((data.crop, data.crop)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


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


def split_loader(info: DatasetInfo, split: str, data: DataConfig, batch_size: int, train: bool) -> DataLoader:
    """Shuffled, augmented batches for training; ordered, plain ones otherwise."""
    images = SplitImages(info, split, train_transform(data) if train else eval_transform(data))
    return DataLoader(images, batch_size=batch_size, shuffle=train, drop_last=train and len(images) >= batch_size,
                      num_workers=data.loader_workers, pin_memory=data.pin_memory,
                      persistent_workers=data.loader_workers > 0)
