"""A trained (or imported) model on disk, as the train stage writes it and export reads it.

    <folder>/
        model.pt        the weights: a plain state dict (loads with ``weights_only=True``)
        model.json      :class:`RunMeta`: what the weights are and the config they were trained with

The training stage adds ``metrics.json`` and ``history.csv`` beside them (pipeline/train/outputs.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.config import Config, validate
from pipeline.models import WSOLModel, build_model
from pipeline.records import ModelIdentity, record

WEIGHTS, META = "model.pt", "model.json"


@dataclass(frozen=True)
class RunMeta(ModelIdentity):
    """model.json: the model, the config it was trained with; a trained run names its epochs and
    Ray/MLflow runs, an imported checkpoint its file."""

    config: dict  # the full configuration, as validated
    mlflow_run_id: str | None = None
    selected_epoch: int | None = None
    epochs: int | None = None
    restarts: int = 0
    ray_run: str | None = None
    imported_from: str | None = None

    @property
    def settings(self) -> Config:
        return validate(self.config, META)


@dataclass(frozen=True)
class Run:
    model: WSOLModel  # in eval mode
    meta: RunMeta


def save_run(folder: Path, state_dict: dict[str, torch.Tensor], meta: RunMeta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / WEIGHTS)
    (folder / META).write_text(json.dumps(asdict(meta), indent=2) + "\n")


def read_meta(folder: Path) -> RunMeta:
    path = folder / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the train stage first")
    return record(RunMeta, json.loads(path.read_text()), str(path))


def read_run(folder: Path) -> Run:
    """The network of a run folder, built from its own config, with its weights, in eval mode."""
    meta = read_meta(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: run the train stage first")
    model = build_model(meta.backbone, meta.method, meta.num_classes, meta.settings, pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return Run(model.eval(), meta)
