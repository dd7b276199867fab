"""The final evaluation on test, of the exported network (what users get), under the protocol.

    results/<dataset>/<backbone>-<method>-seed<seed>/
        metrics.json    top-1 cls, top-1 loc, GT-known loc, MaxBoxAcc at each IoU, MaxBoxAccV2, their
                        optimal thresholds, PxAP where masks exist, each with its 95 % bootstrap
                        interval over test images (``ci95``), and where the CAMs go (``regions``)
        scores.json     the headline alone, flat, in % to 0.01: MaxBoxAccV2 with its interval
                        (``maxboxacc_v2_ci_low``/``_ci_high``), top-1 loc, top-1 cls, GT-known loc, PxAP
                        where masks exist (``dvc metrics show``: one row per run, one column each)
        boxacc.csv      BoxAcc against the CAM threshold at each IoU (dvc plots show)
        pr_curve.csv    pixel precision against recall, for mask datasets
        records/        the evaluator's per-image records (box.npz, mask.npz): what paired
                        comparisons between runs resample

The test scores are also logged into the training run's MLflow run (``test_*``, their intervals
``test_*_ci_low`` / ``_ci_high``), the headline as its description, and onto the model version that
its export registered (description and ``test_*`` tags). The rows that frame every method are score maps scored by the same
evaluator into folders of the same form (:func:`score_reference`): the protocol's floor, a centred
Gaussian (:func:`evaluate_baseline`), the pretrained features and the few-shot row
(pipeline/evaluation/reference_rows.py).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from pipeline.dag.paths import RECORDS, Layout, replaced_atomically
from pipeline.dag.tracking import (
    client_for,
    in_project,
    log_dataset_inputs,
    log_metrics,
    store_failure_warns,
)
from pipeline.data.dataset_folder import DatasetError, DatasetInfo
from pipeline.evaluation.scoring import CamFunction, SplitScores, score_split, test_scoring
from pipeline.formats.export_folder import PT2, load_exported
from pipeline.metrics import RESIZE_LENGTH, confidence_intervals
from pipeline.metrics.box_evaluator import GT_KNOWN_IOU
from pipeline.metrics.regions import RegionResult, bootstrap_ci
from pipeline.settings.config import Config, EvaluateConfig

log = logging.getLogger("pipeline.evaluate")

SCORES = "scores.json"


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _regions(result: RegionResult, optimal_threshold: float | None, settings: EvaluateConfig) -> dict:
    """Where the CAMs go, as shares in [0, 1] per region: the prior (pixel shares), the CAM mass
    with its 95 % interval, and the box at the IoU-50 optimal threshold."""
    def shares(values: np.ndarray) -> list | None:  # None where no image counts (every map constant)
        return None if np.isnan(values).any() else values.tolist()

    out = {"names": list(result.region_names), "images": result.images, "prior": shares(result.prior),
           "cam_mass": shares(result.mass), "cam_mass_images": result.mass_images, "cam_mass_ci95": None}
    if result.mass_images:
        out["cam_mass_ci95"] = bootstrap_ci(result.mass_per_image, settings.bootstrap_samples,
                                            settings.bootstrap_seed).tolist()
    if optimal_threshold is not None:
        out["box_threshold"] = optimal_threshold
        out["box"] = shares(result.box_at(optimal_threshold))
    return out


def _metrics(scores: SplitScores, config: Config) -> dict:
    settings = config.evaluate
    out: dict[str, object] = {"images": scores.images, "cam_curve_interval": settings.cam_curve_interval,
                              **scores.summary()}
    intervals: dict[str, object] = {}
    for result in (scores.box, scores.mask):
        if result is not None:
            intervals.update(confidence_intervals(result, settings.bootstrap_samples, settings.bootstrap_seed))
    out["ci95"] = intervals
    out["bootstrap"] = {"samples": settings.bootstrap_samples, "seed": settings.bootstrap_seed, "level": 0.95}
    optimal = None
    if scores.box is not None:
        out["optimal_threshold"] = {str(d): t for d, t in scores.box.multi_contour.optimal_threshold.items()}
        optimal = scores.box.multi_contour.optimal_threshold[GT_KNOWN_IOU]
    if scores.regions is not None:
        out["regions"] = _regions(scores.regions, optimal, settings)
    return out


HEADLINE = (("maxboxacc_v2", "MaxBoxAccV2"), ("top1_loc", "top-1 loc"), ("top1_cls", "top-1 cls"),
            ("gt_known_loc", "GT-known loc"), ("pxap", "PxAP"))  # key, name: what scores.json and the headline hold


def headline(metrics: dict) -> str:
    """'MaxBoxAccV2 24.75 [23.1, 27.1], top-1 loc 10.00, ...': the scores a reader compares runs by."""
    parts = []
    for key, name in HEADLINE:
        if metrics.get(key) is not None:
            low_high = metrics["ci95"].get(key) if key == "maxboxacc_v2" else None
            parts.append(f"{name} {metrics[key]:.2f}" + (f" [{low_high[0]:.1f}, {low_high[1]:.1f}]" if low_high else ""))
    return ", ".join(parts)


def flat_scores(metrics: dict) -> dict[str, float]:
    """scores.json: the headline's values (%) rounded to 0.01, MaxBoxAccV2's interval as two fields."""
    out = {}
    for key, _ in HEADLINE:
        if metrics.get(key) is not None:
            out[key] = round(metrics[key], 2)
            if key == "maxboxacc_v2" and key in metrics["ci95"]:
                low, high = metrics["ci95"][key]
                out.update({f"{key}_ci_low": round(low, 2), f"{key}_ci_high": round(high, 2)})
    return out


def _log_to_training_run(layout: Layout, run_id: str, info: DatasetInfo, scores: SplitScores, metrics: dict,
                         folder: Path) -> None:
    """test_* metrics (and their intervals) at the run's last epoch, the headline as the run's
    description and on the model versions registered from it, the test split as a dataset input and
    the result files into the training run; a store that no longer has the run (deleted, or another
    tracking URI), or that fails (locked, corrupt), only costs a warning: the files are the record."""
    values = {f"test_{k}": v for k, v in scores.summary().items() if v is not None}
    for name, (low, high) in metrics["ci95"].items():
        values.update({f"test_{name}_ci_low": low, f"test_{name}_ci_high": high})
    values = {k: round(v, 2) for k, v in values.items()}  # % to 0.01 as the report: the runs table shows them raw
    described = f"Test ({info.name}, {metrics['images']} images): {headline(metrics)}"
    with store_failure_warns(layout, f"the test scores of MLflow run {run_id}"):
        client = client_for(layout)
        # Step 0: MLflow 3's chart view draws a metric as bars, one per run in its colour, only where no run
        # has it at a step >= 1 (its JS, getBaseChartConfigs); one-dot line charts otherwise.
        log_metrics(client, run_id, values)
        client.set_tag(run_id, MLFLOW_RUN_NOTE, described)
        for version in client.search_model_versions(f"run_id = '{run_id}'"):
            client.update_model_version(version.name, version.version, described)
            for key, value in flat_scores(metrics).items():
                client.set_model_version_tag(version.name, version.version, f"test_{key}", str(value))
        log_dataset_inputs(client, run_id, info, {"test": "evaluation"}, layout)
        with in_project(layout):
            for name in ("metrics.json", SCORES, "boxacc.csv", "pr_curve.csv"):
                client.log_artifact(run_id, str(folder / name), "test")


def _write_results(staging: Path, scores: SplitScores, metrics: dict, config: Config) -> None:
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (staging / SCORES).write_text(json.dumps(flat_scores(metrics), indent=2) + "\n")
    (staging / RECORDS).mkdir()
    for name, result in (("box", scores.box), ("mask", scores.mask)):
        if result is not None:
            result.records.save(staging / RECORDS / f"{name}.npz")
    # Both curve files always exist (header only where they do not apply): dvc.yaml declares them.
    deltas = tuple(config.evaluate.iou_thresholds)
    box_rows: Iterable[list[str]] = []
    if scores.box is not None:
        curves = scores.box.multi_contour.boxacc
        box_rows = ([f"{t:.4f}", *(f"{curves[d][k]:.4f}" for d in deltas)] for k, t in enumerate(scores.box.thresholds))
    _write_csv(staging / "boxacc.csv", ["threshold", *(f"iou_{d}" for d in deltas)], box_rows)
    mask = scores.mask
    _write_csv(staging / "pr_curve.csv", ["threshold", "precision", "recall"], [] if mask is None else
               ([f"{t:.4f}", f"{p:.6f}", f"{r:.6f}"] for t, p, r in zip(mask.thresholds, mask.precision, mask.recall, strict=False)))


def _announce(out: Path, metrics: dict) -> None:
    """One line per scored model or row, so that a stage that took a while says what it found."""
    log.info("%s: %s", out, headline(metrics))


def evaluate_exported(path: Path, config: Config, layout: Layout, out: Path, force: bool = False) -> dict:
    """Score an exported model.pt2 on params' test split; write ``out`` (metrics.json, curves) and
    return its metrics. The scores also go into the training run's MLflow run, where it has one.
    ``force``: as :func:`pipeline.dag.paths.replaced_atomically` (``wsol evaluate`` refuses a foreign
    ``--out`` before calling this; a stage's folder may hold DVC's .gitignore, which is kept)."""
    exported, meta = load_exported(path)
    if meta.dataset != config.dataset:
        raise DatasetError(f"{path} was trained on {meta.dataset!r}, params.yaml selects {config.dataset!r}")
    info = DatasetInfo.load(layout.split(config.dataset))
    scores = score_split(exported, info, "test", meta.input_settings(config.data), test_scoring(config), torch.device("cpu"),
                         regions=True)
    metrics = _metrics(scores, config)
    with replaced_atomically(out, force) as staging:
        _write_results(staging, scores, metrics, config)
    _announce(out, metrics)
    if meta.mlflow_run_id is not None:
        _log_to_training_run(layout, meta.mlflow_run_id, info, scores, metrics, out)
    return metrics


def center_gaussian(images: torch.Tensor, classes: torch.Tensor, size: int = RESIZE_LENGTH) -> tuple[None, torch.Tensor]:
    """The protocol's trivial baseline (Choe et al.): for every image the same isotropic Gaussian
    centred on it, (B, size, size) in [0, 1], and no class prediction. Its sigma, a quarter of the
    side, matters little: every threshold of an isotropic Gaussian cuts a centred disc, so the sweep
    over tau tries centred discs (and their boxes) of radius 0.14 to 3 sigma whatever sigma is."""
    centre = (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / (size / 4)
    gaussian = torch.exp(-(centre[:, None] ** 2 + centre[None, :] ** 2) / 2)
    return None, gaussian.expand(len(images), size, size)


def score_reference(cams: CamFunction, config: Config, layout: Layout, out: Path, run_id: str | None = None,
                    device: torch.device | None = None, write_more: Callable[[Path], None] | None = None) -> dict:
    """A reference row: score maps ``cams`` scored on test like a run, written to ``out`` (a stage's
    own folder, with what ``write_more`` adds) and, with ``run_id``, logged into that MLflow run."""
    info = DatasetInfo.load(layout.split(config.dataset))
    scores = score_split(cams, info, "test", config.data, test_scoring(config), device or torch.device("cpu"),
                         regions=True)
    metrics = _metrics(scores, config)
    with replaced_atomically(out, force=True) as staging:
        _write_results(staging, scores, metrics, config)
        if write_more is not None:
            write_more(staging)
    _announce(out, metrics)
    if run_id is not None:
        _log_to_training_run(layout, run_id, info, scores, metrics, out)
    return metrics


def evaluate_baseline(config: Config, layout: Layout) -> dict:
    """The baseline stage: the center Gaussian scored on test into results/<dataset>/center-gaussian/."""
    return score_reference(center_gaussian, config, layout, layout.baseline(config.dataset))


def evaluate(config: Config, layout: Layout, backbone: str, method: str, seed: int) -> dict:
    """The evaluate stage: exports/<dataset>/<run>/ scored into results/<dataset>/<run>/."""
    return evaluate_exported(layout.export(config.dataset, backbone, method, seed) / PT2, config, layout,
                             layout.results(config.dataset, backbone, method, seed), force=True)  # its own folder
