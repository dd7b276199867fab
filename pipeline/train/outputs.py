"""The training stage's outputs, and reading them back (export, evaluation).

    runs/<dataset>/<backbone>-<method>/
        model.pt        the selected weights: a plain state dict
        model.json      backbone, method, classes, the val-optimal CAM threshold, the config trained with
        metrics.json    the selected epoch's training and val (train-fullsup) metrics (dvc metrics)
        history.csv     every epoch's metrics (dvc plots)

MLflow receives the same files with a val CAM gallery and the val BoxAcc curves.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import Config, validate
from pipeline.figures import GalleryCollector, boxacc_curves, grid, save_picture
from pipeline.models import WSOLModel, build_model
from pipeline.paths import Layout, replaced_atomically
from pipeline.scoring import score_split
from pipeline.tracking import client_for
from pipeline.train.driver import TrainedRun
from pipeline.train.worker import val_scoring

UNTRACKED = ("images_per_s",)  # timings vary from run to run: MLflow only, not in DVC-tracked files


@dataclass(frozen=True)
class Trained:
    """A training run's outputs read back."""

    model: WSOLModel
    meta: dict

    @property
    def config(self) -> Config:
        return validate(self.meta["config"], "model.json")


def read_trained(folder: Path) -> Trained:
    meta_path, weights_path = folder / "model.json", folder / "model.pt"
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the train stage first")
    meta = json.loads(meta_path.read_text())
    model = build_model(meta["backbone"], meta["method"], meta["num_classes"],
                        validate(meta["config"], str(meta_path)), pretrained=False)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return Trained(model.eval(), meta)


def save_model(folder: Path, state_dict: dict, meta: dict) -> None:
    """model.pt (the state dict) and model.json (``meta``: backbone, method, num_classes,
    class_names, cam_threshold, mlflow_run_id, config, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / "model.pt")
    (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


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
    out = layout.run(config.dataset, trained.backbone, trained.method)
    selected = trained.selected
    threshold = selected.get("val_cam_threshold", 0.5)
    meta = {"dataset": config.dataset, "backbone": trained.backbone, "method": trained.method,
            "num_classes": trained.info.num_classes, "class_names": list(trained.info.class_names),
            "cam_threshold": threshold, "selected_epoch": trained.selected_epoch, "epochs": trained.progress.epoch,
            "restarts": trained.progress.restarts, "ray_run": trained.ray_name, "mlflow_run_id": trained.mlflow_run_id,
            "config": config.model_dump(mode="json")}
    with replaced_atomically(out) as staging:
        save_model(staging, trained.state_dict, meta)
        (staging / "metrics.json").write_text(json.dumps(_tracked(selected), indent=2) + "\n")
        rows = [_tracked(row) for row in trained.progress.history]
        with (staging / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        figures = staging / "figures"
        _val_figures(read_trained(staging).model, trained, config, threshold, figures)
        client = client_for(layout)
        for name in ("model.pt", "model.json", "metrics.json", "history.csv"):
            client.log_artifact(trained.mlflow_run_id, str(staging / name))
        client.log_artifacts(trained.mlflow_run_id, str(figures), "figures")
        client.set_terminated(trained.mlflow_run_id, status="FINISHED")
    return out
