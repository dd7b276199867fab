"""A trained (or imported) model on disk, as the train stage writes it and export reads it.

    <folder>/
        model.pt        the weights: a plain state dict (loads with ``weights_only=True``)
        model.json      :class:`RunMeta`: what the weights are and the config they were trained with

The training stage adds ``metrics.json``, ``history.csv`` and ``cost.json`` (pipeline/run_cost.py)
beside them (pipeline/train/outputs.py).
"""

from __future__ import annotations

import json
import textwrap
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pipeline.config import Config, validate
from pipeline.finite_weights import require_finite
from pipeline.models import WSOLModel, build_model
from pipeline.records import ModelIdentity, RecordError, read_record, within

WEIGHTS, META = "model.pt", "model.json"


class RunFolderError(RecordError):
    """Not a run folder of this pipeline: a missing or bad model.json or model.pt; the message names the file."""


@dataclass(frozen=True)
class RunMeta(ModelIdentity):
    """model.json: the model, the config it was trained with; a trained run names its epochs and
    Ray/MLflow runs, an imported checkpoint its file."""

    config: dict  # the full configuration, as validated
    mlflow_run_id: str | None = None
    selected_epoch: int | None = field(default=None, metadata=within(0))
    epochs: int | None = field(default=None, metadata=within(1))
    restarts: int = field(default=0, metadata=within(0))
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
    """A run folder's model.json."""
    return read_record(RunMeta, folder / META, "run the train stage first", RunFolderError)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A model.pt's state dict, loaded without running any code the file may carry (``weights_only``),
    every value finite."""
    if not path.is_file():
        raise RunFolderError(f"{path} is missing: run the train stage first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's advice on TorchScript files, refused below anyway
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unpickling errors have many types
        raise RunFolderError(f"{path}: not a state dict saved by torch.save") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise RunFolderError(f"{path}: holds no state dict of tensors")
    require_finite(state, str(path))
    return state


def read_run(folder: Path) -> Run:
    """The network of a run folder, built from its own config, with its weights, in eval mode."""
    meta = read_meta(folder)
    weights = folder / WEIGHTS
    state = _read_weights(weights)
    model = build_model(meta.backbone, meta.method, meta.num_classes, meta.settings, pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing, unexpected or misshapen tensors, listed over many lines
        raise RunFolderError(f"{weights}: not the weights of the {meta.backbone}-{meta.method} model its {META} "
                             f"describes ({textwrap.shorten(str(error), 240)})") from None
    return Run(model.eval(), meta)
