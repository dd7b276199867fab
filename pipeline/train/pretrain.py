"""The pretrain stage: the synthetic stand-in for ImageNet weights.

The paper fine-tunes backbones that already know how to see (ImageNet weights). Offline, a
backbone whose ``backbone_settings.<b>.pretrained`` is ``pretrain`` gets the same regime from this
stage: the plain torchvision classifier (its usual strides, global pooling and ``fc``, as ImageNet
weights are trained) learns to tell the eight **body shapes** apart on a larger generated set. A
class is a shape; the head wears a random colour, never the one the benchmark pairs with that
shape (:func:`pipeline.data.synth.pretrain_colours`), so the network never sees a benchmark class
and colour alone cannot name the class (``colour_only_top1_cls`` measures what it gives). Objects
are upright, large and darker than the background (``PRETRAIN_APPEARANCE``), the background's
stripes no better than chance at naming the class (``context_bias`` 1/8): the shape is the
evidence. The weights are saved in torchvision's names so :meth:`Backbone.load_pretrained` loads
them as it loads ImageNet's. A backbone with ImageNet weights (a torchvision name or a ``.pth``)
or none skips the training.

    pretrained/<backbone>/
        pretrain.json    what the weights are: the source, and for trained ones the classes, images,
                         held-out top-1, the colour-only top-1 and the per-epoch loss
        weights.pth      the state dict (trained backbones only)

Training runs in-process on the stage's CPUs (or the first GPU) and is logged to MLflow
(experiment ``wsol-pretrain``: per-epoch metrics, system metrics, the generated set as its dataset
input, pretrain.json as its artifact).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from pipeline.dag.paths import PRETRAINED_WEIGHTS, Layout, replaced_atomically
from pipeline.dag.tracking import (
    client_for,
    dataset_input,
    experiment_id,
    flatten,
    in_project,
    log_epoch,
    log_metrics,
    open_run,
    system_metrics,
    tracking_uri,
)
from pipeline.data import synth
from pipeline.data.loading import IMAGENET_MEAN, IMAGENET_STD
from pipeline.settings.config import PRETRAIN_STAGE, Config, PretrainConfig

log = logging.getLogger("pipeline.pretrain")

SUMMARY = "pretrain.json"
HELD_OUT = 0.1  # fraction of the generated images kept out of training to measure top-1
CLASSES = synth.BODY_SHAPES  # one class per body shape
# Shapes the network can see: upright, 40-80 % of the side, bodies darker than any background
# (its tint's value is 165, its noise +-25; a benchmark body's grey, 90-170, is not).
PRETRAIN_APPEARANCE = synth.Appearance(size_range=(0.4, 0.8), max_rotation=0.0, body_greys=(20, 70))


@dataclass(frozen=True)
class Images:
    """Generated images (N, S, S, 3) uint8 RGB, their labels (N,) and head colours (N,) (indices
    into synth.HEAD_COLOURS)."""

    pixels: np.ndarray
    labels: np.ndarray
    colours: np.ndarray


def generate(settings: PretrainConfig, benchmark_classes: int) -> Images:
    """The pretraining set: ``images_per_class`` scenes of each body shape, each with a head colour
    drawn from those :func:`synth.pretrain_colours` allows."""
    scene_settings = synth.SceneSettings(settings.image_size, len(CLASSES), settings.context_bias, settings.distractors,
                                         PRETRAIN_APPEARANCE)
    pixels, labels, colours = [], [], []
    for label in range(len(CLASSES)):
        allowed = synth.pretrain_colours(label, benchmark_classes)
        for n in range(settings.images_per_class):
            rng = np.random.default_rng([settings.seed, label, n])
            colour = int(rng.choice(allowed))
            image, _ = synth.render(synth.sample_scene(rng, label, scene_settings, (colour, label)), settings.image_size)
            pixels.append(image)
            labels.append(label)
            colours.append(colour)
    return Images(np.stack(pixels), np.array(labels, np.int64), np.array(colours, np.int64))


def held_out_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): a random ``HELD_OUT`` of the images (at least one) is held out."""
    order = np.random.default_rng(seed).permutation(len(labels))
    held = max(1, int(len(order) * HELD_OUT))
    return order[held:], order[:held]


def colour_only_top1(images: Images, train: np.ndarray, held: np.ndarray) -> float:
    """Held-out top-1 (%) of the best classifier that sees only the head colour: each colour names
    the class it most often wears in training (ties: the lowest class)."""
    table = {colour: int(np.bincount(images.labels[train][images.colours[train] == colour]).argmax())
             for colour in np.unique(images.colours[train])}
    predicted = np.array([table.get(int(c), 0) for c in images.colours[held]])
    return float((predicted == images.labels[held]).mean() * 100)


def classifier(backbone: str, num_classes: int) -> torch.nn.Module:
    """The plain torchvision network of a registered backbone, with a ``num_classes`` head."""
    extra = {"aux_logits": False, "init_weights": True} if backbone == "inception_v3" else {}
    return getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes, **extra)


def _batch(images: Images, index: np.ndarray, crop: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, crop, crop) normalised tensors: random crop and flip with ``rng``, else the centre resized."""
    x = torch.from_numpy(images.pixels[index]).permute(0, 3, 1, 2).float() / 255
    if rng is None:
        x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
    else:
        top, left = rng.integers(0, x.shape[-1] - crop + 1, 2)
        x = x[..., top:top + crop, left:left + crop]
        if rng.random() < 0.5:
            x = x.flip(-1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std, torch.from_numpy(images.labels[index])


def train_classifier(model: torch.nn.Module, images: Images, train: np.ndarray, settings: PretrainConfig,
                     device: torch.device, on_epoch=None) -> list[dict]:
    """AdamW (``settings.weight_decay``) on a one-cycle schedule peaking at ``settings.lr``, on the
    images ``train``; returns the per-epoch history."""
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * (len(train) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps, pct_start=0.15)
    model.to(device).train()
    history = []
    for epoch in range(settings.epochs):
        started, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        shuffled = rng.permutation(train)
        for start in range(0, len(shuffled) - settings.batch_size + 1, settings.batch_size):
            x, y = _batch(images, shuffled[start:start + settings.batch_size], settings.crop, rng)
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        row = {"epoch": epoch + 1, "loss": total / seen, "train_top1_cls": correct * 100.0 / seen,
               "images_per_s": seen / (time.perf_counter() - started)}
        history.append(row)
        log.info("epoch %d/%d: loss %.3f, train top-1 %.1f, %.1f img/s", epoch + 1, settings.epochs, row["loss"],
                 row["train_top1_cls"], row["images_per_s"])
        if on_epoch is not None:
            on_epoch(row)
    return history


@torch.no_grad()
def held_out_top1(model: torch.nn.Module, images: Images, index: np.ndarray, crop: int, device: torch.device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(index), 64):
        x, y = _batch(images, index[start:start + 64], crop, None)
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct * 100.0 / len(index)


def pretrain(config: Config, layout: Layout, backbone: str) -> dict:
    """The stage ``pretrain@<backbone>``: writes pretrained/<backbone>/ and returns its summary."""
    source = config.backbone_settings.of(backbone).pretrained
    out = layout.pretrained(backbone)
    if source != PRETRAIN_STAGE:
        summary: dict[str, object] = {"backbone": backbone, "source": source, "trained": False}
        log.info("%s: pretrained %s, nothing to pretrain", backbone, source or "null (random init)")
        with replaced_atomically(out, force=True) as staging:  # the stage's own folder
            (staging / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    settings = config.pretrain
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(settings.seed)
    images = generate(settings, config.datasets.synth.classes)
    train, held = held_out_split(images.labels, settings.seed)
    classes = len(CLASSES)
    colour_only = colour_only_top1(images, train, held)
    log.info("%s: pretraining on %d generated images of %d body shapes (colour alone: %.1f %% held-out top-1)",
             backbone, len(train), classes, colour_only)
    client = client_for(layout)
    run_id = open_run(client, experiment_id(client, "pretrain", layout), f"pretrain-{backbone}",
                      f"pretrain-{backbone}-{time.time_ns()}", flatten({"backbone": backbone, **settings.model_dump()}),
                      {"backbone": backbone}, layout.root)
    generated = {"images": len(images.labels), "classes": classes}
    client.log_inputs(run_id, datasets=[  # what it trains on: the generator's settings are the data
        dataset_input("pretrain-shapes", hashlib.sha256(json.dumps(settings.model_dump(), sort_keys=True).encode())
                      .hexdigest()[:16], "pipeline/train/pretrain.py:generate", generated, "training")])
    model = classifier(backbone, classes)
    started = time.perf_counter()
    with system_metrics(run_id, tracking_uri(layout), config.ray.system_metrics_interval):
        history = train_classifier(model, images, train, settings, device, lambda row: log_epoch(client, run_id, row))
    top1 = held_out_top1(model, images, held, settings.crop, device)
    log_metrics(client, run_id, {"held_out_top1_cls": top1, "colour_only_top1_cls": colour_only})
    log.info("%s: held-out top-1 %.1f %% (colour alone %.1f %%)", backbone, top1, colour_only)
    summary = {"backbone": backbone, "source": PRETRAIN_STAGE, "trained": True, "classes": classes,
               "class_names": list(CLASSES), "images": len(images.labels), "held_out_images": len(held),
               "held_out_top1_cls": top1, "colour_only_top1_cls": colour_only,
               "train_s": time.perf_counter() - started, "mlflow_run_id": run_id, "history": history}
    with replaced_atomically(out, force=True) as staging:  # the stage's own folder
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        torch.save(state, staging / PRETRAINED_WEIGHTS)
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    with in_project(layout):
        client.log_artifact(run_id, str(out / SUMMARY))  # the weights stay in pretrained/ (DVC's)
    client.set_terminated(run_id)
    return summary
