"""``wsol import-checkpoint``: a model the reference trained, as a run folder of ours.

The folder is what the train stage writes (pipeline/formats/run_folder.py), so ``wsol export`` and
``wsol evaluate`` treat it as any trained run; its CAM threshold is the val-optimal one, found on
train-fullsup as training finds it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.dag.paths import Layout, replaced_atomically
from pipeline.data.dataset_folder import DatasetError, DatasetInfo
from pipeline.evaluation.scoring import score_split, val_scoring
from pipeline.formats.run_folder import RunMeta, save_run
from pipeline.metrics import FALLBACK_CAM_THRESHOLD, GT_KNOWN_IOU
from pipeline.models.reference_checkpoint import ImportedCheckpoint, import_checkpoint
from pipeline.settings.config import Config


def import_run(path: Path, backbone: str, method: str, config: Config, layout: Layout, out: Path,
               force: bool = False) -> ImportedCheckpoint:
    """Convert the reference checkpoint at ``path`` for params' dataset and write it to ``out``
    (``force``: as :func:`pipeline.dag.paths.replaced_atomically`)."""
    info = DatasetInfo.load(layout.split(config.dataset))
    imported = import_checkpoint(path, backbone, method, config)
    if imported.num_classes != info.num_classes:
        raise DatasetError(f"{path}: its classifier has {imported.num_classes} classes, {config.dataset} has "
                           f"{info.num_classes}")
    scores = score_split(imported.model.cams, info, "val", config.data, val_scoring(config), torch.device("cpu"))
    threshold = (scores.box.multi_contour.optimal_threshold[GT_KNOWN_IOU] if scores.box is not None
                 else FALLBACK_CAM_THRESHOLD)
    meta = RunMeta(dataset=config.dataset, backbone=backbone, method=method, num_classes=info.num_classes,
                   class_names=list(info.class_names), cam_threshold=threshold,
                   settings=config.run(backbone, method).as_json(), imported_from=str(path.resolve()))
    with replaced_atomically(out, force) as staging:
        save_run(staging, imported.model.state_dict(), meta)
    return imported
