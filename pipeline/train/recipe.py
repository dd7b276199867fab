"""The optimisation recipe (Sec. 4.1 of the paper): SGD with momentum and weight decay, the new
layers at lr_classifier_ratio x the backbone's rate, step decay; mixed precision on GPU."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from pipeline.models import WSOLModel
from pipeline.settings.config import Config


def optimizer_for(model: WSOLModel, config: Config, backbone: str, method: str) -> torch.optim.SGD:
    """SGD over the model's two groups at the run's lr and weight decay (:meth:`Config.optimiser`): the
    new layers at lr x train.lr_classifier_ratio when the backbone starts from pretrained weights;
    every layer at lr when it starts from random init (all of it is new then: a ratio would train part
    of a random network 10x faster by accident)."""
    optimiser = config.optimiser(backbone, method)
    lr, train = optimiser.lr, config.train
    pretrained, new = model.parameter_groups()
    ratio = train.lr_classifier_ratio if config.backbone_settings.of(backbone).pretrained else 1.0
    return torch.optim.SGD([{"params": pretrained, "lr": lr}, {"params": new, "lr": lr * ratio}], lr=lr,
                           momentum=train.momentum, weight_decay=optimiser.weight_decay, nesterov=train.nesterov)


def scheduler_for(optimizer: torch.optim.Optimizer, config: Config, backbone: str, method: str
                  ) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.optimiser(backbone, method).lr_decay_epochs,
                                           gamma=config.train.lr_decay_factor)


def device_name(device: torch.device) -> str:
    """What trains: "cpu", or the GPU's name ("NVIDIA H200")."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def channels_last(config: Config, device: torch.device) -> bool:
    """Whether weights and batches are stored channels-last: train.channels_last asks for it, on a GPU only."""
    return config.train.channels_last and device.type == "cuda"


def place_model(model: WSOLModel, config: Config, device: torch.device) -> WSOLModel:
    """The model on ``device``, in channels-last memory format where :func:`channels_last` (the
    loop gives it channels-last batches then)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last(config, device) else model  # type: ignore[call-overload]  # torch's stubs lack memory_format


def autocast(config: Config, device: torch.device) -> AbstractContextManager:
    """bf16/fp16 autocast on GPU when train.amp asks for it; nothing on CPU."""
    if config.train.amp == "none" or device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if config.train.amp == "bf16" else torch.float16)


def grad_scaler(config: Config, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on GPU; a pass-through otherwise."""
    return torch.amp.GradScaler("cuda", enabled=config.train.amp == "fp16" and device.type == "cuda")


def optimization_step(loss: torch.Tensor, parameters, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                      config: Config) -> torch.Tensor | None:
    """Backward of ``loss`` (scaled for fp16), the global gradient norm clipped to train.grad_clip
    (unless 0), the optimizer's step. Returns the gradient's global norm before clipping (a 0-d
    tensor; inf or NaN on an fp16 step the scaler skips), None when clipping is off."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    norm = None
    if config.train.grad_clip > 0:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return norm


def term_gradient_norms(terms: dict[str, torch.Tensor], parameters: list[torch.nn.Parameter],
                        scaler: torch.amp.GradScaler) -> dict[str, torch.Tensor]:
    """The L2 norm of each loss term's own gradient on ``parameters`` (0-d tensors, by term name),
    without touching their ``.grad``: one extra backward per term, the graph kept for the step's own."""
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    norms = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(scaler.scale(term), parameters, retain_graph=True, allow_unused=True)
        present = [g.detach().float().flatten() for g in grads if g is not None]
        norms[name] = (torch.linalg.vector_norm(torch.cat(present)) if present else term.new_zeros(())) / scale
    return norms


def seed_everything(seed: int, rank: int, epoch: int) -> None:
    """Seed torch, NumPy and random from (seed, rank, epoch): each epoch's randomness (shuffling,
    augmentation, dropout, method draws) depends on nothing else, so a run resumed at an epoch
    boundary continues exactly as an uninterrupted one would."""
    value = (seed * 1_000_003 + rank * 10_007 + epoch + 1) % 2**63
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)
