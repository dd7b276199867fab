"""The download and split stages, for whichever dataset params.yaml selects."""

from __future__ import annotations

import logging

from pipeline.settings.config import Config
from pipeline.data.dataset_folder import DatasetInfo, write_dataset
from pipeline.data.sources import SOURCES
from pipeline.dag.paths import Layout

log = logging.getLogger(__name__)


def download(config: Config, layout: Layout) -> None:
    """Fill data/raw/<dataset>: generate (synth), download and verify, or record a local copy."""
    SOURCES[config.dataset].fetch(getattr(config.datasets, config.dataset), layout)
    log.info("%s: raw data in %s", config.dataset, layout.raw(config.dataset))


def split(config: Config, layout: Layout) -> DatasetInfo:
    """Write data/splits/<dataset> (train-weaksup, train-fullsup, test) after checking every file."""
    tables = SOURCES[config.dataset].tables(getattr(config.datasets, config.dataset), layout)
    info = write_dataset(tables, layout.split(config.dataset))
    counts = ", ".join(f"{s} {len(info.metadata(s, 'none'))}" for s in ("train", "val", "test"))
    log.info("%s: %d classes; images: %s", info.name, info.num_classes, counts)
    return info
