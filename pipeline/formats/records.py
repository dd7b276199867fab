"""Typed records read back from JSON: a dataclass, every key known, every required key present, and
every value of its field's type and within the field's limits (:func:`within`) — the files may
come from anyone (a downloaded export, a copied run folder), so they are checked as params are."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from pipeline.errors import PipelineError
from pipeline.settings.config import DATASETS
from pipeline.settings.registry import BACKBONES, METHODS

R = TypeVar("R")
LIMITS = "limits"  # the key of a field's limits in its metadata


def within(low: float | None = None, high: float | None = None, *, length: tuple[int, int] | None = None,
           choices: typing.Collection[str] | None = None) -> dict:
    """A field's limits beyond its type, as dataclass field metadata: ``low <= value <= high`` (each
    item of a list), ``length`` (min, max) of a list, or one of ``choices``."""
    return {LIMITS: {"low": low, "high": high, "length": length, "choices": choices}}


MAX_CLASSES = 100_000  # ImageNet-21k has 21,841 classes, Open Images 600


@dataclass(frozen=True)
class ModelIdentity:
    """What a trained network is, in every on-disk form of it (run folder, export)."""

    dataset: str = field(metadata=within(choices=DATASETS))
    backbone: str = field(metadata=within(choices=BACKBONES))
    method: str = field(metadata=within(choices=METHODS))
    num_classes: int = field(metadata=within(1, MAX_CLASSES))
    class_names: list[str] = field(metadata=within(length=(1, MAX_CLASSES)))
    # the val-optimal CAM threshold at IoU 50 (``wsol localize`` cuts there), as ``--threshold`` in [0, 1]
    cam_threshold: float = field(metadata=within(0, 1))

    def identity(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(ModelIdentity)}

    def problems(self) -> Iterator[str]:
        """What is wrong across fields (:func:`record` checks each field alone)."""
        if len(self.class_names) != self.num_classes:
            yield f"class_names: {len(self.class_names)} names for num_classes {self.num_classes}"
        if len(set(self.class_names)) != len(self.class_names) or not all(name.strip() for name in self.class_names):
            yield "class_names: expected distinct non-blank names"


class RecordError(PipelineError, ValueError):
    """A record file missing, or not the record it should be; the message names the file."""


def read_json(path: Path, missing: str, error: type[RecordError] = RecordError) -> object:
    """The parsed JSON file at ``path``; ``error`` naming the file when it is missing (with the hint
    ``missing``) or not JSON."""
    if not path.is_file():
        raise error(f"{path} is missing: {missing}")
    try:
        return json.loads(path.read_text())
    except ValueError as problem:  # not JSON, or not UTF-8
        raise error(f"{path}: not valid JSON: {problem}") from None


def read_record(cls: type[R], path: Path, missing: str, error: type[RecordError] = RecordError) -> R:
    """The JSON file at ``path`` as a ``cls``; ``error`` naming the file when it is missing (with the
    hint ``missing``), not JSON, or not a valid ``cls`` (:func:`record`)."""
    data = read_json(path, missing, error)
    try:
        return record(cls, data, str(path))
    except ValueError as problem:  # named with the file and the field
        raise error(str(problem)) from None


def record(cls: type[R], data: object, source: str) -> R:
    """``cls(**data)``, or a ValueError naming ``source`` and the unknown or missing keys, or the first
    field whose value is not of its annotated type (a float finite, an int no bool), is outside its
    :func:`within` limits, or breaks a rule of the record's ``problems()``."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)} for a {cls.__name__}")
    missing = [name for name, f in known.items()
               if name not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{source}: not a {cls.__name__} (missing key(s) {', '.join(missing)})")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        problem = _type_problem(value, hints[name]) or _limit_problem(value, known[name].metadata.get(LIMITS))
        if problem:
            raise ValueError(f"{source}: {name}: {problem}, got {_shown(value)}")
    made = cls(**data)
    for problem in getattr(made, "problems", lambda: ())():
        raise ValueError(f"{source}: {problem}")
    return made


def _type_problem(value: object, hint: object) -> str | None:
    """What ``value`` should have been to be of type ``hint`` (None: it is)."""
    return None if _conforms(value, hint) else f"expected {_describe(hint)}"


def _conforms(value: object, hint: object) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_conforms(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        [item] = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)  # type: ignore[arg-type]  # a class: the hints left are str, bool, dict


def _describe(hint: object) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {type(None): "null", float: "a finite number", int: "an integer", str: "a string", bool: "a boolean",
            dict: "a JSON object"}.get(hint, getattr(hint, "__name__", str(hint)))  # type: ignore[call-overload]


def _limit_problem(value: object, limits: dict | None) -> str | None:
    if limits is None or value is None:
        return None
    low, high, length, choices = limits["low"], limits["high"], limits["length"], limits["choices"]
    if choices is not None and value not in choices:
        return f"expected one of {', '.join(choices)}"
    if length is not None and not length[0] <= len(value) <= length[1]:  # type: ignore[arg-type]  # a list
        return f"expected {length[0]} items" if length[0] == length[1] else f"expected {length[0]} to {length[1]} items"
    items = value if isinstance(value, list) else [value]
    if low is not None and any(v < low for v in items) or high is not None and any(v > high for v in items):
        bounds = f"in [{low}, {high}]" if high is not None else f"of at least {low}"
        return f"expected {'numbers' if isinstance(value, list) else 'a number'} {bounds}"
    return None


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
