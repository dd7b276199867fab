"""Test helpers: metadata folders written by hand, configurations derived from params.yaml, and the
tiny project (params, a generated synthetic dataset, its splits, their prepared arrays) that most end-to-end tests start from."""

import copy
import io
import tarfile
import zipfile
from pathlib import Path

from pipeline.dag.paths import Layout
from pipeline.data import acquire
from pipeline.data.prepared import prepare_splits
from pipeline.settings import yaml_io
from pipeline.settings.config import SOURCES_FILE, Config, load_config, validate, with_sources

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
    """params.yaml with sources.yaml's download sources, as a dict, with dotted-key overrides:
    params(**{"seeds": [3]})."""
    data = with_sources(yaml_io.read(PARAMS), yaml_io.read(PARAMS.with_name(SOURCES_FILE)), SOURCES_FILE)
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
    """A project folder: params.yaml (with dotted-key overrides) and its synthetic dataset, generated,
    split and prepared as the download, split and prepare stages do."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml_io.dump(params(**overrides)))
    layout = Layout(root.resolve())
    cfg = load_config(root / "params.yaml")
    acquire.download(cfg, layout)
    info = acquire.split(cfg, layout)
    prepare_splits(info, cfg.data, layout.prepared(cfg.dataset))
    return layout


def tarball(files: dict[str, bytes], gzip: bool = True) -> bytes:
    """A tar archive (gzipped unless told) of these members, in memory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive of these members, in memory."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()
