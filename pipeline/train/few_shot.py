"""The few-shot fully supervised row (Choe et al., TPAMI 2022, the protocol's own upper reference):
what the same backbone and weights learn from train-fullsup's pixel labels alone, with no WSOL method.

The backbone as every run starts (pipeline/evaluation/reference_rows.py, ``pretrained_backbone``)
up to its last pretrained tap, and a 1x1 convolution giving one foreground logit per feature cell,
trained end to end with per-pixel binary cross-entropy on train-fullsup (the protocol's ``val``
split): its masks where it has them, else its boxes filled as masks; a mask's ignore region counts
for nothing. Images are those of the test transform (resized to ``data.crop``), flipped at random
with their targets. Its sigmoid, as a score map, is scored on test by the same evaluator:

    results/<dataset>/few-shot-<backbone>/
        metrics.json, boxacc.csv, pr_curve.csv, records/   as every result folder (evaluate.py)
        cost.json        what training took (pipeline/formats/run_cost.py's RunCost)
        weights.pth      the network's state dict (:class:`ForegroundNet`)
        few_shot.json    images, pixels labelled by masks or boxes, the per-epoch loss, the MLflow run

The MLflow run ``few-shot-<backbone>`` (dataset experiment) holds the settings, the loss per epoch,
the test scores and the weights, registered as the model ``wsol-<dataset>-<backbone>-few-shot``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.dag.paths import PRETRAINED_WEIGHTS, Layout
from pipeline.dag.tracking import in_project, log_epoch, store_failure_warns
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_images
from pipeline.data.metadata import Box, load_metadata
from pipeline.evaluation.evaluate import score_reference
from pipeline.evaluation.reference_rows import open_row_run, pretrained_backbone
from pipeline.formats.run_cost import COST, RunCost
from pipeline.metrics.mask_evaluator import FOREGROUND, IGNORE, ground_truth_mask
from pipeline.models import Backbone
from pipeline.models.model import score_maps
from pipeline.settings.config import Config, FewShotConfig
from pipeline.train.recipe import device_name

log = logging.getLogger("pipeline.few_shot")

SUMMARY = "few_shot.json"


class ForegroundNet(nn.Module):
    """A backbone up to its last pretrained tap and a 1x1 conv: images (B, 3, H, W) -> foreground
    logits (B, h, w) on the feature grid."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.tap = backbone.pretrained_tap
        self.head = nn.Conv2d(backbone.tap_channels(self.tap), 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.until(images, self.tap))[:, 0]

    def cams(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[None, torch.Tensor]:
        """The evaluator's view: no class prediction, the foreground probability as a (B, 224, 224) score map."""
        return None, score_maps(torch.sigmoid(self(images)))


@dataclass(frozen=True)
class Targets:
    """train-fullsup as tensors: images (N, 3, S, S) normalised, foreground (N, S, S) in {0, 1},
    weight (N, S, S): 0 on ignored pixels, 1 elsewhere; how many images took masks and boxes."""

    images: torch.Tensor
    foreground: torch.Tensor
    weight: torch.Tensor
    from_masks: int
    from_boxes: int


def filled_boxes(boxes: tuple[Box, ...], size: tuple[int, int], side: int) -> np.ndarray:
    """(side, side) bool: True on every pixel that any box (x0, y0, x1, y1, inclusive, in an image of
    ``size`` (width, height)) covers once the image is resized to side x side; a pixel partly covered counts."""
    width, height = size
    filled = np.zeros((side, side), np.bool_)
    for x0, y0, x1, y1 in boxes:
        filled[math.floor(y0 * side / height):math.ceil((y1 + 1) * side / height),
               math.floor(x0 * side / width):math.ceil((x1 + 1) * side / width)] = True
    return filled


def fullsup_targets(info: DatasetInfo, config: Config) -> Targets:
    """Every train-fullsup image with its pixel labels at the crop side: masks where the split has
    them (ignore regions weighted 0), else its boxes filled (scaled from the image's size)."""
    side = config.data.crop
    images = split_images(info, "val", config.data, train=False)
    metadata = info.metadata("val")
    mask_folder = info.mask_metadata_dir("val")
    masks = load_metadata(mask_folder, "masks").masks if mask_folder is not None and info.mask_root is not None else None
    pixels, foreground, weight = [], [], []
    from_masks = 0
    for index, image_id in enumerate(images.image_ids):
        pixels.append(images[index][0])
        if masks is not None and image_id in masks and info.mask_root is not None:
            labels = ground_truth_mask(info.mask_root, masks[image_id], image_id, side)
            foreground.append(labels == FOREGROUND)
            weight.append(labels != IGNORE)
            from_masks += 1
            continue
        assert metadata.boxes is not None  # a split without masks has boxes
        filled = filled_boxes(metadata.boxes[image_id], metadata.image_sizes[image_id], side)
        foreground.append(filled)
        weight.append(np.ones_like(filled))
    return Targets(torch.stack(pixels), torch.from_numpy(np.stack(foreground)).float(),
                   torch.from_numpy(np.stack(weight)).float(), from_masks, len(pixels) - from_masks)


def pixel_loss(logits: torch.Tensor, foreground: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of logits (B, h, w), bilinearly upsampled to the targets' (B, S, S),
    averaged over the pixels of weight 1."""
    logits = F.interpolate(logits[:, None], size=foreground.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    losses = F.binary_cross_entropy_with_logits(logits, foreground, reduction="none")
    return (losses * weight).sum() / weight.sum().clamp(min=1)


def train_foreground(net: ForegroundNet, targets: Targets, settings: FewShotConfig, device: torch.device,
                     on_epoch=None) -> tuple[list[dict], RunCost]:
    """AdamW on a one-cycle schedule, ``settings.epochs`` passes over the images in shuffled batches,
    each image flipped horizontally with its targets at random; returns the history and the cost."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    count = len(targets.images)
    steps_per_epoch = math.ceil(count / settings.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    net.to(device).train()
    history, rates, started = [], [], time.perf_counter()
    for epoch in range(settings.epochs):
        epoch_started, total = time.perf_counter(), 0.0
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, settings.batch_size):
            index = order[start:start + settings.batch_size]
            flip = torch.rand(len(index), generator=generator) < 0.5
            x, y, w = (torch.where(flip.view(-1, *[1] * (t.dim() - 1)), t[index].flip(-1), t[index])
                       for t in (targets.images, targets.foreground, targets.weight))
            loss = pixel_loss(net(x.to(device)), y.to(device), w.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        rates.append(count / (time.perf_counter() - epoch_started))
        history.append({"epoch": epoch + 1, "loss": total / count, "images_per_s": rates[-1]})
        log.info("epoch %d/%d: pixel loss %.4f", epoch + 1, settings.epochs, total / count)
        if on_epoch is not None:
            on_epoch(history[-1])
    cost = RunCost(wall_s=time.perf_counter() - started, images_per_s=float(np.mean(rates)),
                   device=device_name(device), workers=1, epochs=settings.epochs)
    return history, cost


def registered_name(dataset: str, backbone: str) -> str:
    return f"wsol-{dataset}-{backbone}-few-shot"


def _register(layout: Layout, run_id: str, folder: Path, dataset: str, backbone: str, client) -> None:
    """The weights and summary as the run's ``model`` artifacts, registered as a new model version."""
    name = registered_name(dataset, backbone)
    with store_failure_warns(layout, f"model {name} (MLflow run {run_id})"):
        with in_project(layout):
            for file in (PRETRAINED_WEIGHTS, SUMMARY):
                client.log_artifact(run_id, str(folder / file), "model")
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run_id)
        log.info("registered %s version %s (MLflow run %s)", name, version.version, run_id)


def few_shot(config: Config, layout: Layout, backbone: str) -> dict:
    """The few_shot stage: train the row's network on train-fullsup, score it on test into
    results/<dataset>/few-shot-<backbone>/, log and register it; returns its test metrics."""
    settings = config.few_shot
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = DatasetInfo.load(layout.split(config.dataset))
    targets = fullsup_targets(info, config)
    torch.manual_seed(settings.seed)  # the head's initial weights: from the seed, not from what ran before
    net = ForegroundNet(pretrained_backbone(config, layout, backbone))
    log.info("%s: few-shot row on %d train-fullsup images (%d masks, %d filled boxes)", backbone,
             len(targets.images), targets.from_masks, targets.from_boxes)
    client, run_id = open_row_run(config, layout, "few-shot", backbone, {
        "backbone": backbone, "pretrained": str(config.backbone_settings.of(backbone).pretrained),
        "tap": net.tap, "crop": config.data.crop, **settings.model_dump()})

    def logged(row: dict) -> None:
        if run_id is not None:
            with store_failure_warns(layout, f"epoch {row['epoch']} of MLflow run {run_id}"):
                log_epoch(client, run_id, row)

    history, cost = train_foreground(net, targets, settings, device, logged)
    net.eval()
    summary = {"backbone": backbone, "images": len(targets.images), "from_masks": targets.from_masks,
               "from_boxes": targets.from_boxes, "tap": net.tap, "mlflow_run_id": run_id, "history": history}

    def write(staging: Path) -> None:
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, staging / PRETRAINED_WEIGHTS)
        (staging / COST).write_text(json.dumps(asdict(cost), indent=2) + "\n")
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")

    out = layout.few_shot(config.dataset, backbone)
    metrics = score_reference(net.cams, config, layout, out, run_id, device, write)
    if run_id is not None:
        _register(layout, run_id, out, config.dataset, backbone, client)
        with store_failure_warns(layout, f"the end of MLflow run {run_id}"):
            client.set_terminated(run_id)
    return metrics
