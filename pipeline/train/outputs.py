"""The training stage's outputs, written from the driver and logged to MLflow.

    runs/<dataset>/<backbone>-<method>/
        model.pt, model.json   the selected weights and what they are (pipeline/run_folder.py)
        metrics.json           the selected epoch's training and val (train-fullsup) metrics (dvc metrics)
        history.csv            every epoch's metrics (dvc plots)
        figures/               the val BoxAcc curves and a val CAM gallery

MLflow receives the same files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from pipeline.config import Config
from pipeline.figures import GalleryCollector, boxacc_curves, grid, save_picture
from pipeline.models import WSOLModel
from pipeline.paths import Layout, replaced_atomically
from pipeline.run_folder import RunMeta, read_run, save_run
from pipeline.scoring import score_split, val_scoring
from pipeline.tracking import client_for
from pipeline.train.driver import TrainedRun

UNTRACKED = ("images_per_s",)  # timings vary from run to run: MLflow only, not in DVC-tracked files


def _tracked(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in UNTRACKED}


def _val_figures(model: WSOLModel, trained: TrainedRun, config: Config, threshold: float, folder: Path) -> None:
    """The val BoxAcc curves and a gallery of val CAMs with GT (red) and predicted (green) boxes."""
    folder.mkdir()
    gallery = GalleryCollector(config.train.gallery_images)
    scores = score_split(model.cams, trained.info, "val", config.data, val_scoring(config), torch.device("cpu"),
                         observe=gallery if gallery.limit else None)
    if scores.box is not None:
        boxacc_curves({trained.method: scores.box}, folder / "val_boxacc.png",
                      f"{config.dataset} train-fullsup: {trained.backbone}-{trained.method}")
    if gallery.items:
        tiles = gallery.tiles(trained.info.metadata("val"), threshold)
        save_picture(folder / "val_gallery.jpg", grid(tiles, min(4, len(tiles))))


def write_outputs(trained: TrainedRun, config: Config, layout: Layout) -> Path:
    """Write runs/<dataset>/<run>/ (atomically) and log it, with the val gallery, to MLflow."""
    out = layout.run(config.dataset, trained.backbone, trained.method, trained.seed)
    selected = trained.selected
    threshold = selected.get("val_cam_threshold", 0.5)
    meta = RunMeta(config.dataset, trained.backbone, trained.method, trained.info.num_classes,
                   list(trained.info.class_names), threshold, config.model_dump(mode="json"), trained.mlflow_run_id,
                   trained.selected_epoch, trained.progress.epoch, trained.progress.restarts, trained.ray_name)
    with replaced_atomically(out) as staging:
        save_run(staging, trained.state_dict, meta)
        (staging / "metrics.json").write_text(json.dumps(_tracked(selected), indent=2) + "\n")
        rows = [_tracked(row) for row in trained.progress.history]
        with (staging / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        figures = staging / "figures"
        _val_figures(read_run(staging).model, trained, config, threshold, figures)
        client = client_for(layout)
        for name in ("model.pt", "model.json", "metrics.json", "history.csv"):
            client.log_artifact(trained.mlflow_run_id, str(staging / name))
        client.log_artifacts(trained.mlflow_run_id, str(figures), "figures")
        client.set_terminated(trained.mlflow_run_id, status="FINISHED")
    return out
