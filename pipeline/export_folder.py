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
from pipeline.records import ModelIdentity, record

TORCHSCRIPT, ONNX, REPORT = "model.ts", "model.onnx", "export.json"
META = "meta.json"  # the extra file inside model.ts


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
    """A model.ts (in eval mode) and its metadata."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no exported model there (run the export stage)")
    extra = {META: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    return module.eval(), record(ExportMeta, json.loads(extra[META]), f"{path} ({META})")
