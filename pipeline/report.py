"""The benchmark's report: the paper's tables (Table 4/5 layout) and CAM galleries, in Markdown.

    report/<dataset>/report.md, boxacc_<backbone>.png, gallery_<backbone>.jpg

Numbers come from results/<dataset>/<run>/metrics.json (the evaluate stage, on test); galleries
run the exported networks on test images, boxes at each run's val-optimal threshold.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import SplitImages, eval_transform
from pipeline.export_folder import TORCHSCRIPT, load_exported
from pipeline.figures import GalleryCollector, grid, line_plot, save_picture
from pipeline.paths import Layout, replaced_atomically, run_name
from pipeline.registry import BACKBONES, METHODS

NAMES = {name: entry.display for name, entry in METHODS.items()}
BACKBONE_NAMES = {name: entry.display for name, entry in BACKBONES.items()}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _bold_best(values: dict) -> dict:
    """Formatted values with the column's best in bold; missing as '-'."""
    present = {k: v for k, v in values.items() if v is not None}
    best = max(present.values()) if present else None
    return {k: "-" if v is None else (f"**{v:.2f}**" if v == best and len(present) > 1 else f"{v:.2f}")
            for k, v in values.items()}


def _load_results(config: Config, layout: Layout) -> dict[tuple[str, str], dict]:
    results = {}
    for backbone in config.backbones:
        for method in config.methods:
            path = layout.results(config.dataset, backbone, method) / "metrics.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the evaluate stage for {run_name(backbone, method)}")
            results[backbone, method] = json.loads(path.read_text())
    return results


def _detail_table(config: Config, results: dict) -> str:
    deltas = sorted({d for r in results.values() for d in r.get("optimal_threshold", {})}, key=int)
    rows = []
    for backbone in config.backbones:
        for method in config.methods:
            r = results[backbone, method]
            rows.append([NAMES[method], BACKBONE_NAMES[backbone], f"{r['top1_cls']:.2f}",
                         *(f"{r[f'maxboxacc_{d}']:.2f}" for d in deltas), f"{r['maxboxacc_v2']:.2f}",
                         *(f"{r['optimal_threshold'][d]:.2f}" for d in deltas)])
    return _table(["Method", "Backbone", "Top-1 cls", *(f"MaxBoxAcc@{d}" for d in deltas), "MaxBoxAccV2",
                   *(f"τ*@{d}" for d in deltas)], rows)


def _metric_table(config: Config, results: dict, key: str, with_mean: bool = False) -> str:
    """Methods x backbones of one metric, the best of each column in bold; with_mean adds the mean over backbones."""
    columns = {b: _bold_best({m: results[b, m].get(key) for m in config.methods}) for b in config.backbones}
    header = ["Method", *(BACKBONE_NAMES[b] for b in config.backbones)]
    rows = [[NAMES[m], *(columns[b][m] for b in config.backbones)] for m in config.methods]
    if with_mean:
        means = _bold_best({m: np.mean([results[b, m][key] for b in config.backbones]) for m in config.methods})
        header.append("Mean")
        rows = [row + [means[m]] for row, m in zip(rows, config.methods)]
    return _table(header, rows)


def _curves(config: Config, layout: Layout, backbone: str, path: Path) -> Path:
    """BoxAcc at IoU 50 against tau on test, one line per method (from the evaluate stage's boxacc.csv)."""
    lines = []
    for method in config.methods:
        with (layout.results(config.dataset, backbone, method) / "boxacc.csv").open() as f:
            rows = list(csv.DictReader(f))
        lines.append((NAMES[method], [float(r["threshold"]) for r in rows], [float(r["iou_50"]) for r in rows], "-"))
    return line_plot(lines, path, title=f"{config.dataset} test, {BACKBONE_NAMES[backbone]}",
                     ylabel="BoxAcc at IoU 50 (%)")


def _gallery(config: Config, layout: Layout, info: DatasetInfo, backbone: str, path: Path) -> Path:
    """One row per method, the same test images (spread over the split) in each."""
    metadata = info.metadata("test")
    count = config.report.gallery_images
    picks = np.linspace(0, len(metadata) - 1, count).round().astype(int)
    tiles = []
    for method in config.methods:
        exported, meta = load_exported(layout.export(config.dataset, backbone, method) / TORCHSCRIPT)
        images = SplitImages(info, "test", eval_transform(meta.input_settings(config.data)))
        batch = torch.stack([images[int(i)][0] for i in picks])
        labels = torch.tensor([images.labels[int(i)] for i in picks])
        with torch.no_grad():
            _, cams = exported(batch, labels)
        row = GalleryCollector(count)
        row(batch, cams.numpy(), labels.tolist(), labels.tolist(), [metadata.image_ids[i] for i in picks])
        tiles += row.tiles(metadata, meta.cam_threshold)
    return save_picture(path, grid(tiles, count))


def build_report(config: Config, layout: Layout) -> Path:
    results = _load_results(config, layout)
    info = DatasetInfo.load(layout.split(config.dataset))
    out = layout.report(config.dataset)
    any_result = next(iter(results.values()))
    parts = [
        f"# WSOL benchmark: {config.dataset}",
        "",
        f"Test split: {any_result['images']} images, {info.num_classes} classes. Protocol of *Evaluating WSOL Methods "
        "Right* (Choe et al., CVPR 2020): CAMs of the ground-truth class at 224×224, every threshold τ in steps of "
        f"{any_result['cam_curve_interval']}, boxes from every contour; hyperparameters and the exported model chosen "
        "on train-fullsup only. Accuracies in %; the best of each column in bold.",
        "",
        "## MaxBoxAccV2 (Table 4 layout)",
        "",
        "Mean of MaxBoxAcc over IoU 30, 50 and 70.",
        "",
        _metric_table(config, results, "maxboxacc_v2", with_mean=True),
        "",
        "## MaxBoxAcc at each IoU (Table 5 layout)",
        "",
        "τ* is the threshold at which each MaxBoxAcc is reached.",
        "",
        _detail_table(config, results),
        "",
        "## Top-1 localization (Table 6 layout)",
        "",
        "Correct class and IoU ≥ 0.5 at the IoU-50 optimal threshold.",
        "",
        _metric_table(config, results, "top1_loc"),
        "",
        "## GT-known localization",
        "",
        _metric_table(config, results, "gt_known_loc"),
        "",
        "## Top-1 classification (Table 7 layout)",
        "",
        _metric_table(config, results, "top1_cls"),
        "",
    ]
    if all("pxap" in r for r in results.values()):
        parts += ["## PxAP", "", "Pixel average precision of the CAMs against the object masks.", "",
                  _metric_table(config, results, "pxap"), ""]
    with replaced_atomically(out) as staging:
        for backbone in config.backbones:
            name = BACKBONE_NAMES[backbone]
            parts += [f"## {name}", ""]
            _curves(config, layout, backbone, staging / f"boxacc_{backbone}.png")
            parts += [f"![BoxAcc at IoU 50 against the CAM threshold, {name}](boxacc_{backbone}.png)", ""]
            _gallery(config, layout, info, backbone, staging / f"gallery_{backbone}.jpg")
            parts += [f"CAMs on test images, one row per method ({', '.join(NAMES[m] for m in config.methods)}): "
                      "ground truth red, the box at the run's val-optimal threshold green.", "",
                      f"![CAM gallery, {name}](gallery_{backbone}.jpg)", ""]
        (staging / "report.md").write_text("\n".join(parts))
    return out / "report.md"
