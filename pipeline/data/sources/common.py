"""Helpers the dataset sources share."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.settings.config import MetadataSources
from pipeline.data.dataset_folder import DatasetError
from pipeline.data.download import fetch
from pipeline.data.metadata import FILES, metadata_lines


def fetch_metadata(sources: MetadataSources, downloads: Path, into: Path) -> None:
    """Download a split's four metadata files (verified) into ``into`` under their standard names."""
    into.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(fetch(getattr(sources, name.removesuffix(".txt")), downloads), into / name)


def locate(base: Path, relative: str) -> Path:
    """The folder under which ``relative`` exists: base itself, or its one subfolder holding it
    (archives often wrap their content in a top-level folder). Base when neither holds it: the
    split stage then reports every missing file."""
    if (base / relative).exists():
        return base
    holders = [d for d in base.iterdir() if d.is_dir() and (d / relative).exists()] if base.is_dir() else []
    return holders[0] if len(holders) == 1 else base


def read_table(path: Path, columns: int) -> list[list[str]]:
    """A whitespace-separated UTF-8 text file of ``columns`` fields a line (CUB's annotation files)."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    rows = []
    for lineno, line in metadata_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise DatasetError(f"{path}:{lineno}: expected {columns} fields, found {len(fields)}: {line!r}")
        rows.append(fields)
    return rows
