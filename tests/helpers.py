"""Test helpers: metadata folders written by hand, configurations derived from params.yaml, and the
tiny project (params, a generated synthetic dataset, its splits) that most end-to-end tests start from."""

import copy
from pathlib import Path

import yaml

from pipeline.config import Config, load_config, validate
from pipeline.data import prepare
from pipeline.paths import Layout

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
    """params.yaml as a dict, with dotted-key overrides: params(**{"seeds": [3]})."""
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


def make_project(root: Path, **overrides) -> Layout:
    """A project folder: params.yaml (with dotted-key overrides) and its synthetic dataset, generated
    and split as the download and split stages do."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params(**overrides)))
    layout = Layout(root.resolve())
    cfg = load_config(root / "params.yaml")
    prepare.download(cfg, layout)
    prepare.split(cfg, layout)
    return layout
