"""The final evaluation on test, of the exported network (what users get), under the protocol.

    results/<dataset>/<backbone>-<method>/
        metrics.json    top-1 cls, top-1 loc, GT-known loc, MaxBoxAcc at each IoU, MaxBoxAccV2, their
                        optimal thresholds, PxAP where masks exist (dvc metrics show)
        boxacc.csv      BoxAcc against the CAM threshold at each IoU (dvc plots show)
        pr_curve.csv    pixel precision against recall, for mask datasets

The test scores are also logged into the training run's MLflow run (``test_*``).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch
from mlflow.exceptions import MlflowException

from pipeline.config import Config
from pipeline.data.dataset_folder import DatasetError, DatasetInfo
from pipeline.export_folder import TORCHSCRIPT, load_exported
from pipeline.paths import Layout, replaced_atomically
from pipeline.scoring import Scoring, SplitScores, score_split
from pipeline.tracking import client_for, log_metrics, tracking_uri

log = logging.getLogger(__name__)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _metrics(scores: SplitScores, config: Config) -> dict:
    out = {"images": scores.images, "cam_curve_interval": config.evaluate.cam_curve_interval, **scores.summary()}
    if scores.box is not None:
        out["optimal_threshold"] = {str(d): t for d, t in scores.box.multi_contour.optimal_threshold.items()}
    return out


def _log_to_training_run(layout: Layout, run_id: str, scores: SplitScores, folder: Path) -> None:
    """test_* metrics and the result files into the training run; a store that no longer has the
    run (deleted, or another tracking URI) only costs a warning: the files are the record."""
    client = client_for(layout)
    try:
        log_metrics(client, run_id, {f"test_{k}": v for k, v in scores.summary().items() if v is not None})
        for name in ("metrics.json", "boxacc.csv", "pr_curve.csv"):
            client.log_artifact(run_id, str(folder / name), "test")
    except MlflowException as error:
        log.warning("MLflow run %s not found in %s (%s): test scores not logged there", run_id,
                    tracking_uri(layout), error.error_code)


def _write_results(staging: Path, scores: SplitScores, metrics: dict, config: Config) -> None:
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # Both curve files always exist (header only where they do not apply): dvc.yaml declares them.
    deltas = tuple(config.evaluate.iou_thresholds)
    box_rows = []
    if scores.box is not None:
        curves = scores.box.multi_contour.boxacc
        box_rows = ([f"{t:.4f}", *(f"{curves[d][k]:.4f}" for d in deltas)] for k, t in enumerate(scores.box.thresholds))
    _write_csv(staging / "boxacc.csv", ["threshold", *(f"iou_{d}" for d in deltas)], box_rows)
    mask = scores.mask
    _write_csv(staging / "pr_curve.csv", ["threshold", "precision", "recall"], [] if mask is None else
               ([f"{t:.4f}", f"{p:.6f}", f"{r:.6f}"] for t, p, r in zip(mask.thresholds, mask.precision, mask.recall)))


def evaluate_exported(path: Path, config: Config, layout: Layout, out: Path) -> dict:
    """Score an exported model.ts on params' test split; write ``out`` (metrics.json, curves) and
    return its metrics. The scores also go into the training run's MLflow run, where it has one."""
    exported, meta = load_exported(path)
    if meta.dataset != config.dataset:
        raise DatasetError(f"{path} was trained on {meta.dataset!r}, params.yaml selects {config.dataset!r}")
    info = DatasetInfo.load(layout.split(config.dataset))
    settings = Scoring(config.evaluate.cam_curve_interval, tuple(config.evaluate.iou_thresholds), config.evaluate.batch_size)
    scores = score_split(exported, info, "test", meta.input_settings(config.data), settings, torch.device("cpu"))
    metrics = _metrics(scores, config)
    with replaced_atomically(out) as staging:
        _write_results(staging, scores, metrics, config)
        if meta.mlflow_run_id is not None:
            _log_to_training_run(layout, meta.mlflow_run_id, scores, staging)
    return metrics


def evaluate(config: Config, layout: Layout, backbone: str, method: str) -> dict:
    """The evaluate stage: exports/<dataset>/<run>/ scored into results/<dataset>/<run>/."""
    return evaluate_exported(layout.export(config.dataset, backbone, method) / TORCHSCRIPT, config, layout,
                             layout.results(config.dataset, backbone, method))
