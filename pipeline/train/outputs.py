"""The training stage's outputs, written from the driver and logged to MLflow.

    runs/<dataset>/<backbone>-<method>/
        model.pt, model.json   the selected weights and what they are (pipeline/formats/run_folder.py)
        metrics.json           the selected epoch's training and val (train-fullsup) metrics (dvc metrics)
        history.csv            every epoch's metrics (the report's plot data)
        cost.json              what training took: wall time, images/s, device (RunCost)
        figures/               the val BoxAcc curves and a val CAM gallery

MLflow receives the same files but the weights: the run's model there is the exported network, as
an MLflow model (the export stage, pipeline/export/served_model.py).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.dag.paths import Layout, replaced_atomically
from pipeline.dag.tracking import client_for, in_project, store_failure_warns
from pipeline.evaluation.scoring import score_split, val_scoring
from pipeline.formats.finite_weights import NonFiniteWeightsError, require_finite
from pipeline.formats.run_cost import COST, RunCost
from pipeline.formats.run_folder import META, RunMeta, read_run, save_run
from pipeline.metrics import FALLBACK_CAM_THRESHOLD
from pipeline.models import WSOLModel
from pipeline.report.figures import GalleryCollector, boxacc_curves, grid, save_picture
from pipeline.settings.config import Config
from pipeline.train.driver import TrainedRun
from pipeline.train.epoch import is_diagnostic

UNTRACKED = ("images_per_s", "epoch_s")  # timings vary from run to run: MLflow and cost.json, not metrics or history


def _tracked(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in UNTRACKED}


def _results(metrics: dict) -> dict:
    """The selected epoch's metrics for metrics.json (``dvc metrics show``): its diagnostics stay in
    history.csv and MLflow."""
    return {k: v for k, v in _tracked(metrics).items() if not is_diagnostic(k)}


def _val_figures(model: WSOLModel, trained: TrainedRun, config: Config, threshold: float, folder: Path) -> None:
    """The val BoxAcc curves and a gallery of val CAMs with GT (red) and predicted (green) boxes."""
    folder.mkdir()
    gallery = GalleryCollector(config.train.gallery_images, trained.info.num_classes)
    scores = score_split(model.cams, trained.info, "val", config.data, val_scoring(config), torch.device("cpu"),
                         observe=gallery if gallery.limit else None)
    if scores.box is not None:
        boxacc_curves({trained.method: scores.box}, folder / "val_boxacc.png",
                      f"{config.dataset} train-fullsup: {trained.backbone}-{trained.method}")
    if gallery.items:
        tiles = gallery.tiles(trained.info.metadata("val"), threshold, class_names=trained.info.class_names)
        save_picture(folder / "val_gallery.png", grid(tiles, min(4, len(tiles))))


def _cost(trained: TrainedRun, config: Config) -> RunCost:
    history = trained.progress.history
    return RunCost(wall_s=sum(row["epoch_s"] for row in history),
                   images_per_s=sum(row["images_per_s"] for row in history) / len(history),
                   device=trained.progress.device, workers=config.ray.num_workers, epochs=trained.progress.epoch)


def write_outputs(trained: TrainedRun, config: Config, layout: Layout) -> Path:
    """Write runs/<dataset>/<run>/ (atomically), then log it, with the val gallery, to MLflow (a store
    that fails costs a warning, never the run folder); weights that diverged (NaN or infinite values)
    are refused, the MLflow run marked FAILED."""
    out = layout.run(config.dataset, trained.backbone, trained.method, trained.seed)
    try:
        require_finite(trained.state_dict, f"run {out} (epoch {trained.selected_epoch})")
    except NonFiniteWeightsError:
        with store_failure_warns(layout, f"the end (FAILED) of MLflow run {trained.mlflow_run_id}"):
            client_for(layout).set_terminated(trained.mlflow_run_id, status="FAILED")
        raise
    selected = trained.selected
    threshold = selected.get("val_cam_threshold", FALLBACK_CAM_THRESHOLD)
    meta = RunMeta(dataset=config.dataset, backbone=trained.backbone, method=trained.method,
                   num_classes=trained.info.num_classes, class_names=list(trained.info.class_names),
                   cam_threshold=threshold, settings=config.run(trained.backbone, trained.method).as_json(),
                   mlflow_run_id=trained.mlflow_run_id, selected_epoch=trained.selected_epoch,
                   epochs=trained.progress.epoch, restarts=trained.progress.restarts, ray_run=trained.ray_name)
    with replaced_atomically(out, force=True) as staging:  # the stage's own folder
        save_run(staging, trained.state_dict, meta)
        (staging / "metrics.json").write_text(json.dumps(_results(selected), indent=2) + "\n")
        rows = [_tracked(row) for row in trained.progress.history]
        with (staging / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        figures = staging / "figures"
        (staging / COST).write_text(json.dumps(asdict(_cost(trained, config)), indent=2) + "\n")
        _val_figures(read_run(staging).model, trained, config, threshold, figures)
    with store_failure_warns(layout, f"the files of MLflow run {trained.mlflow_run_id}"):
        client = client_for(layout)
        with in_project(layout):
            for name in (META, "metrics.json", "history.csv", COST):
                client.log_artifact(trained.mlflow_run_id, str(out / name))
            client.log_artifacts(trained.mlflow_run_id, str(out / "figures"), "figures")
        client.set_terminated(trained.mlflow_run_id, status="FINISHED")
    return out
