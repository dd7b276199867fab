"""The training loop each Ray Train worker runs (DDP across workers).

Per epoch: train on train-weaksup; rank 0 scores train-fullsup (val) with MaxBoxAccV2 (the only
split the protocol allows for selection), logs the epoch to MLflow and writes a checkpoint of the
whole training state; every rank reports to Ray. A worker restarted after a failure, or a run
started again with the same name, resumes from the last checkpoint. The first worker of each node
samples the node's CPU, memory and GPU use into the MLflow run (``system/...``, per node when the
run spans several: ``system/node_<k>/...``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from mlflow.tracking import MlflowClient
from ray.train.v2._internal.execution import context as train_context
from ray.train.v2._internal.execution import storage as train_storage

from pipeline.dag.tracking import log_epoch, system_metrics
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_loader
from pipeline.evaluation.scoring import score_split, val_scoring
from pipeline.metrics import GT_KNOWN_IOU
from pipeline.models import build_model
from pipeline.settings.config import validate
from pipeline.train import state as saved
from pipeline.train.attention_probe import attention_localization
from pipeline.train.epoch import train_epoch
from pipeline.train.recipe import device_name, grad_scaler, optimizer_for, place_model, scheduler_for, seed_everything

log = logging.getLogger("pipeline.train")

SELECTION = "val_localization"  # reported to Ray only (Tune's metric): MLflow and history have it by its own name


def _attention_lines(metrics: dict[str, float]) -> list[str]:
    """The epoch's attention figures in words, one line per tap (none for a method without attention)."""
    taps = dict.fromkeys(key.split("/")[1] for key in metrics if key.startswith("attention/"))
    lines = []
    for tap in taps:
        figure = {key.split("/")[2]: value for key, value in metrics.items() if key.startswith(f"attention/{tap}/")}
        parts = [f"A<0 {100 * figure['negative']:.1f} %", f"empty drop mask {100 * figure['drop_empty']:.1f} %",
                 f"drop area {100 * figure['drop_area']:.1f} %", f"variation {figure['variation']:.2f}"]
        if "val_auc_attention" in figure:
            parts.append(f"val AUC {figure['val_auc_attention']:.3f}")
        if "val_auc_channel_mean" in figure:
            parts.append(f"(channel mean {figure['val_auc_channel_mean']:.3f})")
        lines.append(f"  {tap}: " + ", ".join(parts))
    return lines


def _restore(model, optimizer, scheduler, scaler, rank: int, epochs: int) -> tuple[saved.TrainingState, dict | None]:
    """The state of Ray Train's latest checkpoint loaded into the given objects (a restarted worker,
    or a run started again under the same name); a fresh state when there is none."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return saved.TrainingState(), None
    best_model = None
    with checkpoint.as_directory() as folder:
        progress = saved.load(Path(folder), model, optimizer, scheduler, scaler)
        if (Path(folder) / saved.BEST).is_file():
            best_model = torch.load(Path(folder) / saved.BEST, map_location="cpu", weights_only=True)
    if rank == 0:
        log.info("resuming after epoch %d of %d from %s", progress.epoch, epochs, checkpoint.path)
    return progress, best_model


def node_label(node_rank: int, local_world_size: int, world_size: int) -> str | None:
    """The node's name in its system metrics (``system/<name>/...``) when the run spans several nodes
    (Ray Train counts the workers of one IP address as one node); None on one node."""
    return f"node_{node_rank}" if local_world_size < world_size else None


@contextlib.contextmanager
def _system_metrics(payload: WorkerPayload, interval: float, resumed: bool):
    """This node's CPU, memory and GPU use into the MLflow run while the block runs, from the node's
    first worker only (one series per node, named per node when there are several)."""
    context = ray.train.get_context()
    if context.get_local_rank() != 0:
        yield
        return
    node = node_label(context.get_node_rank(), context.get_local_world_size(), context.get_world_size())
    with system_metrics(payload.mlflow_run_id, payload.mlflow_tracking_uri, interval, node, resumed):
        yield


@dataclass(frozen=True)
class WorkerPayload:
    """What the driver sends every worker (Ray Train's ``train_loop_config``, as ``asdict``)."""

    config: dict  # the validated Config, as JSON
    backbone: str
    method: str
    seed: int
    dataset_folder: str
    pretrained_folder: str  # the pretrain stage's
    prepared_folder: str  # the prepare stage's
    mlflow_tracking_uri: str
    mlflow_run_id: str


def _quiet_ray_train() -> None:
    """Ray Train logs every report (the whole ``TrainingReport(...)``, metrics and checkpoint path) and
    every checkpoint at INFO, one long line each per epoch; the epoch's own line says what matters. The
    report's logger is named after its module's file path, hence the module's own ``logger``."""
    for logger in (train_context.logger, train_storage.logger):
        logger.setLevel(logging.WARNING)


def train_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``; ``loop_config``: a :class:`WorkerPayload` as a dict."""
    payload = WorkerPayload(**loop_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _quiet_ray_train()
    config = validate(payload.config, "params.yaml (as sent to the worker)")
    backbone, method = payload.backbone, payload.method
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(config.ray.cpus_per_worker)
    info = DatasetInfo.load(payload.dataset_folder)
    settings = config.backbone_settings.of(backbone)

    seed_everything(payload.seed, 0, -1)  # the same initial weights on every rank
    model = place_model(build_model(backbone, method, info.num_classes, config, Path(payload.pretrained_folder)),
                        config, device)
    optimizer = optimizer_for(model, config, backbone, method)
    scheduler = scheduler_for(optimizer, config, backbone, method)
    scaler = grad_scaler(config, device)
    progress, best_model = _restore(model, optimizer, scheduler, scaler, rank, settings.epochs)
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={
        "find_unused_parameters": model.method.may_skip_parameters})
    per_worker = max(1, settings.batch_size // world)
    prepared = Path(payload.prepared_folder)
    loader = ray.train.torch.prepare_data_loader(split_loader(info, "train", config.data, per_worker, train=True,
                                                              prepared=prepared))
    client = MlflowClient(payload.mlflow_tracking_uri) if rank == 0 else None
    progress.device = device_name(device)
    with _system_metrics(payload, config.ray.system_metrics_interval, resumed=progress.epoch > 0):
        for epoch in range(progress.epoch, settings.epochs):
            started = time.perf_counter()
            seed_everything(payload.seed, rank, epoch)
            if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            metrics = {"epoch": epoch + 1, "lr": lr, **train_epoch(ddp, model, loader, optimizer, scaler, config,
                                                                    device, epoch, settings.epochs, rank, world)}
            scheduler.step()
            if rank != 0:
                ray.train.report(metrics)
                continue
            model.eval()
            scores = score_split(model.cams, info, "val", config.data, val_scoring(config), device, prepared=prepared)
            metrics.update(attention_localization(model, info, config.data, config.evaluate.batch_size, device, prepared))
            model.train()
            metrics.update({f"val_{k}": v for k, v in scores.summary().items() if v is not None})
            if scores.box is not None:
                metrics["val_cam_threshold"] = scores.box.multi_contour.optimal_threshold[GT_KNOWN_IOU]
            metrics["epoch_s"] = time.perf_counter() - started  # training and val scoring
            progress.epoch = epoch + 1
            progress.history.append(metrics)
            if scores.localization > progress.best_score:
                progress.best_score, progress.best_epoch = scores.localization, epoch + 1
                if config.train.select == "best":
                    best_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            log.info("epoch %d/%d: loss %.3f, train top-1 %.1f | val localization %.2f, top-1 %.1f | %.1f img/s%s",
                     epoch + 1, settings.epochs, metrics["loss"], metrics["train_top1_cls"], scores.localization,
                     scores.top1_cls, metrics["images_per_s"],
                     "".join(f"\n{line}" for line in _attention_lines(metrics)))
            assert client is not None  # rank 0's
            log_epoch(client, payload.mlflow_run_id, metrics)
            with tempfile.TemporaryDirectory() as folder:
                saved.save(Path(folder), progress, model, optimizer, scheduler, scaler, best_model)
                # Ray Tune selects on the protocol's score whatever the dataset: MaxBoxAccV2, or PxAP (mask-only)
                ray.train.report({**metrics, SELECTION: scores.localization},
                                 checkpoint=ray.train.Checkpoint.from_directory(folder))
