"""What the size of train-fullsup costs: the CAM threshold tau chosen on k images per class, against the
one a large pool of such images chooses, in MaxBoxAccV2 lost on that pool (the regret of a small val set).

    python benchmarks/val_size.py --export exports/synth/resnet18-cam-seed0 --per-class 100

Generates, from params.yaml's synthetic dataset settings, a pool of ``--per-class`` train-fullsup images
per class (the generator's val split: its first images are the real train-fullsup), scores the exported
network on it once (per image, whether some box reaches each IoU at each tau), then for each k draws
``--draws`` stratified subsets of k images per class, takes each subset's optimal tau at each IoU (30, 50,
70) and measures on the pool what that tau gives against the pool's own optimum. Prints, per k, the mean
and 95th percentile of that regret (MaxBoxAccV2 points) and the spread (std) of the chosen tau at IoU 50.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.dag.paths import Layout
from pipeline.data import acquire
from pipeline.evaluation.scoring import Scoring, score_split
from pipeline.formats.export_folder import load_exported
from pipeline.settings import yaml_io
from pipeline.settings.config import SOURCES_FILE, load_config

IOUS = (30, 50, 70)
SIZES = (2, 5, 10, 20, 40)


def pool_hits(export: Path, per_class: int, params: Path, interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hits (N, 3, K) bool at IoU 30/50/70 and each tau, labels (N,), thresholds (K,)) of the pool."""
    settings = yaml_io.read(params)
    settings["datasets"]["synth"]["images_per_class"] = {"train": 1, "val": per_class, "test": 1}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "params.yaml").write_text(yaml_io.dump(settings))
        shutil.copy(params.with_name(SOURCES_FILE), root / SOURCES_FILE)
        layout, config = Layout(root), load_config(root / "params.yaml")
        acquire.download(config, layout)
        info = acquire.split(config, layout)
        network, meta = load_exported(export)
        scores = score_split(network, info, "val", meta.input_settings(config.data), Scoring(interval, IOUS),
                             torch.device("cpu"))
        labels = np.array([info.metadata("val").class_labels[i] for i in info.metadata("val").image_ids])
    assert scores.box is not None  # the synthetic dataset has boxes
    records = scores.box.records
    rows = [records.deltas.index(d) for d in IOUS]
    return records.hits()[:, rows], labels, records.thresholds


def regrets(hits: np.ndarray, labels: np.ndarray, k: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(regret (draws,) in MaxBoxAccV2 points, chosen tau index at IoU 50 (draws,)) of subsets of k per class."""
    pool = hits.mean(axis=0) * 100  # (3, K): BoxAcc of the pool at each IoU and tau
    best = pool.max(axis=1)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    lost, chosen = np.empty(draws), np.empty(draws, int)
    for d in range(draws):
        subset = np.concatenate([rng.choice(members, k, replace=False) for members in classes])
        picks = hits[subset].mean(axis=0).argmax(axis=1)  # the subset's optimal tau per IoU (the first of ties)
        lost[d] = float(np.mean(best - pool[np.arange(len(IOUS)), picks]))
        chosen[d] = picks[IOUS.index(50)]
    return lost, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="an export folder (exports/<dataset>/<run>)")
    parser.add_argument("--per-class", type=int, default=100, help="pool images per class")
    parser.add_argument("--draws", type=int, default=500, help="subsets drawn per size")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--interval", type=float, default=0.01, help="the tau step (train.val_cam_curve_interval)")
    args = parser.parse_args()
    hits, labels, thresholds = pool_hits(args.export.resolve(), args.per_class, args.params, args.interval)
    rng = np.random.default_rng(0)
    pool = hits.mean(axis=0) * 100
    print(f"pool: {len(labels)} images, MaxBoxAccV2 {pool.max(axis=1).mean():.2f}, "
          f"tau* at IoU 50 {thresholds[pool[1].argmax()]:.2f}")
    print("per class | regret mean | regret p95 | std of tau*@50")
    for k in SIZES:
        if k > np.bincount(labels).min():
            break
        lost, chosen = regrets(hits, labels, k, args.draws, rng)
        print(f"{k:9d} | {lost.mean():11.2f} | {np.percentile(lost, 95):10.2f} | {thresholds[chosen].std():.3f}")


if __name__ == "__main__":
    main()
