"""An exported inference network on disk, as the export stage writes it and evaluation, the report
and ``wsol localize`` read it (none of which needs Ray or ONNX).

    exports/<dataset>/<backbone>-<method>/
        model.pt2       torch.export program: (images (B, 3, S, S) normalised, classes (B,), -1: predicted)
                        -> (logits (B, K), CAMs (B, 224, 224) in [0, 1]); :class:`ExportMeta` inside
        model.onnx      the same program in ONNX
        export.json     :class:`ExportMeta` and how far each file is from the eager model
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from torch.export.pt2_archive import is_pt2_package

from pipeline.errors import PipelineError
from pipeline.export.pt2_safety import UnsafeProgramError, load_program
from pipeline.formats.records import ModelIdentity, record, within
from pipeline.settings.config import DataConfig

PT2, ONNX, REPORT = "model.pt2", "model.onnx", "export.json"
META = "meta.json"  # the extra file inside model.pt2


class ExportFolderError(PipelineError, ValueError):
    """Not an export of this pipeline (a missing or foreign model.pt2, a bad meta.json); the message names the file."""


@dataclass(frozen=True)
class ExportMeta(ModelIdentity):
    """What a user of the exported network needs: the model, its input size and normalisation."""

    # px, square: from the 8 px of a test network to 4096 px, where one image is 201 MB as float32
    input_size: int = field(metadata=within(8, 4096))
    mean: list[float] = field(metadata=within(0, 1, length=(3, 3)))  # per RGB channel, of images in [0, 1]
    std: list[float] = field(metadata=within(0, 1, length=(3, 3)))
    mlflow_run_id: str | None
    cams_for: str = "classes[b], or the predicted class where classes[b] is -1"

    def problems(self) -> Iterator[str]:
        yield from super().problems()
        if 0 in self.std:
            yield f"std: expected positive numbers, got {self.std}"

    def input_settings(self, data: DataConfig) -> DataConfig:
        """Loading settings for this network: images resized to its input size, loader options from ``data``."""
        return data.model_copy(update={"resize": self.input_size, "crop": self.input_size})


def load_exported(path: Path) -> tuple[nn.Module, ExportMeta]:
    """The network of a model.pt2, its weights frozen, and its metadata; ``path`` is the file or the
    export folder holding it. The program is the eval-mode graph (BatchNorm on its running statistics,
    no dropout): its module's ``training`` flag means nothing, and ``train()`` / ``eval()`` refuse."""
    if path.is_dir():
        path = path / PT2
    if not path.is_file():
        raise ExportFolderError(f"{path}: no exported model there (run the export stage)")
    if not is_pt2_package(str(path)):  # before torch.export.load, which logs a traceback for foreign files
        raise ExportFolderError(f"{path}: not a torch.export program such as the export stage's {PT2}")
    extra = {META: ""}
    try:
        program = _quietly_loaded(path, extra)
    except UnsafeProgramError as error:  # it would run code: named with the file and the entry
        raise ExportFolderError(str(error)) from None
    if not extra[META]:
        raise ExportFolderError(f"{path}: torch.export program without the {META} the export stage puts inside")
    try:
        data = json.loads(extra[META])
    except ValueError as error:
        raise ExportFolderError(f"{path} ({META}): not valid JSON: {error}") from None
    try:
        meta = record(ExportMeta, data, f"{path} ({META})")
    except ValueError as error:  # named with the file and the field
        raise ExportFolderError(str(error)) from None
    return program.module().requires_grad_(False), meta


def _quietly_loaded(path: Path, extra: dict[str, str]):
    """``load_program``, its deserialization errors as one ExportFolderError (torch.export.load also
    logs them with a traceback, silenced here)."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return load_program(path, extra)
    except UnsafeProgramError:
        raise
    except Exception as error:  # deserialization errors have many types
        raise ExportFolderError(f"{path}: not a loadable torch.export program ({type(error).__name__})") from None
    finally:
        logger.setLevel(level)
