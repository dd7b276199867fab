"""Test helpers: metadata folders written by hand, and configurations derived from params.yaml."""

import copy
from pathlib import Path

import yaml

from pipeline.config import Config, validate

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_box_metadata(root: Path, images: dict[str, tuple[int, tuple[int, int], list[tuple[int, int, int, int]]]]) -> Path:
    """images: id -> (label, (width, height), boxes in original pixels). Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_ids.txt").write_text("".join(f"{i}\n" for i in images))
    (root / "class_labels.txt").write_text("".join(f"{i},{label}\n" for i, (label, _, _) in images.items()))
    (root / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (_, (w, h), _) in images.items()))
    (root / "localization.txt").write_text("".join(
        f"{i},{x0},{y0},{x1},{y1}\n" for i, (_, _, boxes) in images.items() for x0, y0, x1, y1 in boxes))
    return root


def params(**overrides) -> dict:
    """params.yaml as a dict, with dotted-key overrides: params(**{"train.seed": 3})."""
    data = yaml.safe_load(PARAMS.read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = copy.deepcopy(value)
    return data


def config(**overrides) -> Config:
    """The validated project configuration with dotted-key overrides."""
    return validate(params(**overrides), "params.yaml (test overrides)")
