"""Typed records read back from JSON: a dataclass, every key known, every required key present."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from pipeline.errors import PipelineError

R = TypeVar("R")


@dataclass(frozen=True)
class ModelIdentity:
    """What a trained network is, in every on-disk form of it (run folder, export)."""

    dataset: str
    backbone: str
    method: str
    num_classes: int
    class_names: list[str]
    cam_threshold: float  # the val-optimal CAM threshold at IoU 50 (``wsol localize`` cuts there)

    def identity(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(ModelIdentity)}


class RecordError(PipelineError, ValueError):
    """A record file missing, or not the record it should be; the message names the file."""


def read_record(cls: type[R], path: Path, missing: str, error: type[RecordError] = RecordError) -> R:
    """The JSON file at ``path`` as a ``cls``; ``error`` naming the file when it is missing (with the
    hint ``missing``), not JSON, or has unknown or missing keys."""
    if not path.is_file():
        raise error(f"{path} is missing: {missing}")
    try:
        data = json.loads(path.read_text())
    except ValueError as problem:  # not JSON, or not UTF-8
        raise error(f"{path}: not valid JSON: {problem}") from None
    try:
        return record(cls, data, str(path))
    except ValueError as problem:  # unknown or missing keys, named with the file
        raise error(str(problem)) from None


def record(cls: type[R], data: object, source: str) -> R:
    """``cls(**data)``, or a ValueError naming ``source`` and the unknown or missing keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)} for a {cls.__name__}")
    try:
        return cls(**data)
    except TypeError as error:  # a required key missing
        raise ValueError(f"{source}: not a {cls.__name__} ({error})") from None
