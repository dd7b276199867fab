"""Typed records read back from JSON: a dataclass, every key known, every required key present."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

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
