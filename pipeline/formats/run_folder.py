"""A trained (or imported) model on disk, as the train stage writes it and export reads it.

    <folder>/
        model.pt        the weights: a plain state dict (loads with ``weights_only=True``)
        model.json      :class:`RunMeta`: what the weights are, and the run's own settings

The training stage adds ``metrics.json``, ``history.csv`` and ``cost.json`` (pipeline/formats/run_cost.py)
beside them (pipeline/train/outputs.py).

model.json carries a ``schema_version``. Version 2 stores the run's own settings
(:class:`pipeline.settings.config.RunSettings`: data, train, its backbone's and its method's sections), so
backbones and methods added to the registry later leave it readable. Older versions are read by
upgrading them one step at a time:

- version 0 (no ``schema_version``, before 2026-12-05) stored the whole params under ``config``: the
  run's own sections are taken from it;
- version 1 (before 2026-12-06) kept the weight decay in ``train``: it moves to ``backbone``, where
  params.yaml now keeps it per backbone.

A newer version than this code writes is refused by name.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pipeline.formats.finite_weights import require_finite
from pipeline.formats.records import ModelIdentity, RecordError, read_json, record, within
from pipeline.models import WSOLModel, build_model
from pipeline.settings.config import RunSettings

WEIGHTS, META = "model.pt", "model.json"
SCHEMA_VERSION = 2  # of model.json (see above)


class RunFolderError(RecordError):
    """Not a run folder of this pipeline: a missing or bad model.json or model.pt; the message names the file."""


@dataclass(frozen=True)
class RunMeta(ModelIdentity):
    """model.json: the model, the settings it was trained with (:class:`RunSettings` as JSON); a
    trained run names its epochs and Ray/MLflow runs, an imported checkpoint its file."""

    settings: dict
    schema_version: int = field(default=SCHEMA_VERSION, metadata=within(SCHEMA_VERSION, SCHEMA_VERSION))
    mlflow_run_id: str | None = None
    selected_epoch: int | None = field(default=None, metadata=within(0))
    epochs: int | None = field(default=None, metadata=within(1))
    restarts: int = field(default=0, metadata=within(0))
    ray_run: str | None = None
    imported_from: str | None = None

    @property
    def run_settings(self) -> RunSettings:
        return RunSettings.from_json(self.settings, self.method, "settings")

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        try:
            RunSettings.from_json(self.settings, self.method, "settings")
        except ValueError as error:
            yield str(error)


@dataclass(frozen=True)
class Run:
    model: WSOLModel  # in eval mode
    meta: RunMeta


def _from_version_0(data: dict, source: str) -> dict:
    """A version-0 model.json (the whole params under ``config``) as version 1: the run's own
    sections taken from it, the per-backbone values of its method reduced to its backbone."""
    config, backbone, method = data.get("config"), data.get("backbone"), data.get("method")

    def section(*keys: str) -> object:
        value = config
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise ValueError(f"{source}: config.{'.'.join(keys)}: missing (a model.json without schema_version "
                                 "stores the whole params under config)")
            value = value[key]
        return value

    method_settings = section("method_settings", str(method))
    if not isinstance(method_settings, dict):
        raise ValueError(f"{source}: config.method_settings.{method}: expected a JSON object")
    method_settings = dict(method_settings)
    for key, value in method_settings.items():  # PerBackbone values: keyed by backbone names
        if isinstance(value, dict) and backbone in value:
            method_settings[key] = {backbone: value[backbone]}
    upgraded = {key: value for key, value in data.items() if key != "config"}
    return {**upgraded, "schema_version": 1, "settings": {
        "data": section("data"), "train": section("train"), "backbone": section("backbone_settings", str(backbone)),
        "method": method_settings}}


def _from_version_1(data: dict, source: str) -> dict:
    """A version-1 model.json as version 2: ``settings.train.weight_decay`` moved to
    ``settings.backbone.weight_decay``."""
    settings = data.get("settings")
    if not (isinstance(settings, dict) and isinstance(settings.get("train"), dict)
            and isinstance(settings.get("backbone"), dict) and "weight_decay" in settings["train"]):
        raise ValueError(f"{source}: settings.train.weight_decay: missing (a version-1 model.json keeps the "
                         "weight decay there)")
    train = dict(settings["train"])
    backbone = {**settings["backbone"], "weight_decay": train.pop("weight_decay")}
    return {**data, "schema_version": 2, "settings": {**settings, "train": train, "backbone": backbone}}


_UPGRADES = {0: _from_version_0, 1: _from_version_1}  # version -> the next version's JSON


def save_run(folder: Path, state_dict: dict[str, torch.Tensor], meta: RunMeta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / WEIGHTS)
    (folder / META).write_text(json.dumps(asdict(meta), indent=2) + "\n")


def read_meta(folder: Path) -> RunMeta:
    """A run folder's model.json, of any schema version up to :data:`SCHEMA_VERSION`."""
    path = folder / META
    data = read_json(path, "run the train stage first", RunFolderError)
    try:
        version = data.get("schema_version", 0) if isinstance(data, dict) else SCHEMA_VERSION
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"{path}: schema_version: expected a whole number, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {version} is newer than this wsol reads (up to "
                             f"{SCHEMA_VERSION}): read it with the wsol that wrote it, or update wsol")
        while version < SCHEMA_VERSION and isinstance(data, dict):
            data = _UPGRADES[version](data, str(path))
            version = data["schema_version"]
        return record(RunMeta, data, str(path))
    except ValueError as problem:  # named with the file and the field
        raise RunFolderError(str(problem)) from None


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
    model = build_model(meta.backbone, meta.method, meta.num_classes, meta.run_settings, pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing, unexpected or misshapen tensors, listed over many lines
        raise RunFolderError(f"{weights}: not the weights of the {meta.backbone}-{meta.method} model its {META} "
                             f"describes ({textwrap.shorten(str(error), 240)})") from None
    return Run(model.eval(), meta)
