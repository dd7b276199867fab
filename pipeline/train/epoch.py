"""One pass over the training split: the loop every Ray Train worker runs each epoch
(pipeline/train/worker.py), free of Ray and MLflow so a benchmark or a probe runs it alone."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import cast

import torch

from pipeline.models import WSOLModel
from pipeline.train.recipe import autocast, channels_last, optimization_step, term_gradient_norms

log = logging.getLogger("pipeline.train")


def is_diagnostic(metric: str) -> bool:
    """Whether an epoch's metric is a diagnostic of the training (history.csv and MLflow), not a
    result (metrics.json): attention figures, gradient norms, clipped steps."""
    return "/" in metric


def train_epoch(ddp: torch.nn.Module, model: WSOLModel, loader, optimizer, scaler, config, device, epoch: int,
                 epochs: int, rank: int, world: int) -> dict[str, float]:
    """One pass over the training split; returns mean loss terms, training top-1 and the diagnostics
    (rank 0's share; :func:`is_diagnostic` names): the method's attention figures
    (``attention/<tap>/...``), the gradient's norm before clipping (``grad/norm``, mean over steps) and
    how many steps the clip shortened (``grad/clipped_steps``), and each loss term's gradient norm on
    the backbone and its share of their sum (``grad/<term>/norm``, ``grad/<term>/share``), measured on
    the first step and every ``train.grad_terms_every`` steps.

    Sums stay on the device and are read every ``train.log_every`` steps and at the end: a GPU never
    waits for the host between those steps. A non-finite loss is caught at the next read, naming
    its first step; the run then stops, its last checkpoint (the previous epoch's) untouched."""
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    term_norms: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    measured = 0
    correct = torch.zeros((), dtype=torch.long, device=device)
    first_bad = torch.zeros((), dtype=torch.long, device=device)  # first step whose loss was not finite; 0: none
    clipped = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    started = time.perf_counter()
    to_channels_last = channels_last(config, device)
    every = config.train.grad_terms_every
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    for step, (images, labels, _) in enumerate(loader, start=1):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if to_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = model.method.augment(images, labels)
        with autocast(config, device):
            outputs = ddp(images, targets.labels)
            terms = model.method.losses(outputs, targets)
            loss = cast(torch.Tensor, sum(terms.values()))
        if rank == 0 and every and (step - 1) % every == 0:
            for name, term_norm in term_gradient_norms(terms, backbone, scaler).items():
                term_norms[name] += term_norm
            measured += 1
        norm = optimization_step(loss, ddp.parameters(), optimizer, scaler, config)
        batch = len(labels)
        seen += batch
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        correct += (outputs["logits"].detach().argmax(dim=1) == labels).sum()
        sums["loss"] += loss.detach().float() * batch
        for name, value in terms.items():
            sums[f"loss_{name}"] += value.detach().float() * batch
        for name, value in outputs.get("diagnostics", {}).items():
            sums[name] += value.float() * batch
        if norm is not None:
            sums["grad/norm"] += norm.float() * batch
            clipped += norm > config.train.grad_clip
        if step % config.train.log_every == 0 or step == len(loader):
            if first_bad.item():
                raise FloatingPointError(f"epoch {epoch + 1}, step {first_bad.item()}: the loss is not finite; "
                                         "lower the learning rate or set train.grad_clip")
            if rank == 0:
                rate = seen * world / (time.perf_counter() - started)
                means = {k: v.item() / seen for k, v in sums.items() if k.startswith("loss")}  # the losses only: few reads
                parts = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in means.items() if k != "loss")
                log.info("epoch %d/%d step %d/%d: loss %.3f (%s) %.1f img/s", epoch + 1, epochs, step, len(loader),
                         means["loss"], parts, rate)
    stats = {k: v.item() / seen for k, v in sums.items()}
    stats["train_top1_cls"] = correct.item() * 100.0 / seen
    if config.train.grad_clip > 0:
        stats["grad/clipped_steps"] = clipped.item()
    if measured:
        norms = {name: total.item() / measured for name, total in term_norms.items()}
        total = max(sum(norms.values()), 1e-12)
        stats.update({f"grad/{name}/norm": value for name, value in norms.items()})
        stats.update({f"grad/{name}/share": value / total for name, value in norms.items()})
    stats["images_per_s"] = seen * world / (time.perf_counter() - started)
    return stats
