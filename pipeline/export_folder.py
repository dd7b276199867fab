"""An exported inference network on disk, as the export stage writes it and evaluation, the report
and ``wsol localize`` read it (none of which needs Ray or ONNX).

    exports/<dataset>/<backbone>-<method>/
        model.ts        TorchScript: (images (B, 3, S, S) normalised, classes (B,), -1: predicted)
                        -> (logits (B, K), CAMs (B, 224, 224) in [0, 1]); :class:`ExportMeta` inside
        model.onnx      the same network in ONNX
        export.json     :class:`ExportMeta` and how far each file is from the eager model
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import DataConfig
from pipeline.errors import PipelineError
from pipeline.records import ModelIdentity, record

TORCHSCRIPT, ONNX, REPORT = "model.ts", "model.onnx", "export.json"
META = "meta.json"  # the extra file inside model.ts


class ExportFolderError(PipelineError, ValueError):
    """Not an export of this pipeline: a missing or foreign model.ts, or a bad meta.json; the message names the file."""


@dataclass(frozen=True)
class ExportMeta(ModelIdentity):
    """What a user of the exported network needs: the model, its input size and normalisation."""

    input_size: int  # px, square
    mean: list[float]  # per RGB channel, of images in [0, 1]
    std: list[float]
    mlflow_run_id: str | None
    cams_for: str = "classes[b], or the predicted class where classes[b] is -1"

    def input_settings(self, data: DataConfig) -> DataConfig:
        """Loading settings for this network: images resized to its input size, loader options from ``data``."""
        return DataConfig(resize=self.input_size, crop=self.input_size, loader_workers=data.loader_workers,
                          pin_memory=data.pin_memory)


def load_exported(path: Path) -> tuple[torch.jit.ScriptModule, ExportMeta]:
    """A model.ts (in eval mode) and its metadata; ``path`` is the file or the export folder holding it."""
    if path.is_dir():
        path = path / TORCHSCRIPT
    if not path.is_file():
        raise ExportFolderError(f"{path}: no exported model there (run the export stage)")
    extra = {META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), _extra_files=extra)
    except RuntimeError:
        raise ExportFolderError(f"{path}: not a TorchScript file such as the export stage's {TORCHSCRIPT}") from None
    if not extra[META]:
        raise ExportFolderError(f"{path}: TorchScript without the {META} the export stage puts inside")
    try:
        data = json.loads(extra[META])
    except ValueError as error:  # not JSON, or not UTF-8
        raise ExportFolderError(f"{path} ({META}): not valid JSON: {error}") from None
    try:
        return module.eval(), record(ExportMeta, data, f"{path} ({META})")
    except ValueError as error:  # unknown or missing keys, named with the file
        raise ExportFolderError(str(error)) from None
