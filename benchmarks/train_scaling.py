"""Training time per epoch against the number of training images and of Ray Train workers.

Each case is a real ``fit`` (Ray Train, local Ray, MLflow run) of the default profile's first backbone
and a method, from random init, on the built-in synthetic dataset generated in a scratch project with
``--images`` training images per class; 1 worker with all ``--cpus`` cores, or several workers
sharing them (DDP over gloo, the batch split between them). Reported per case: the training time of
an epoch (images / the loop's images/s, validation excluded) and the whole epoch (validation on
train-fullsup included), the mean over epochs after the first.

    python benchmarks/train_scaling.py --images 100 200 --workers 1 2 --cpus 2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from pipeline.dag.paths import Layout
from pipeline.data import acquire
from pipeline.data.prepared import prepare_splits
from pipeline.settings import yaml_io
from pipeline.settings.config import SOURCES_FILE, load_config
from pipeline.train.driver import ensure_ray, fit

ROOT = Path(__file__).resolve().parents[1]


def scratch_project(root: Path, images_per_class: int, workers: int, cpus: int, epochs: int, method: str) -> Layout:
    """A project folder with params.yaml for this case, its synthetic dataset split and prepared."""
    params = yaml_io.read(ROOT / "params.yaml")
    backbone = params["backbones"][0]
    params.update(methods=[method], seeds=[0])
    params["datasets"]["synth"]["images_per_class"]["train"] = images_per_class
    params["backbone_settings"][backbone].update(pretrained=None, epochs=epochs)
    params["ray"].update(num_workers=workers, cpus_per_worker=cpus // workers, system_metrics_interval=0)
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml_io.dump(params))
    (root / SOURCES_FILE).write_text((ROOT / SOURCES_FILE).read_text())
    layout = Layout(root)
    config = load_config(root / "params.yaml")
    acquire.download(config, layout)
    info = acquire.split(config, layout)
    prepare_splits(info, config.data, layout.prepared(config.dataset))
    return layout


def measure(images: list[int], workers: list[int], cpus: int, epochs: int, method: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for per_class in images:
            for count in workers:
                layout = scratch_project(Path(folder) / f"{per_class}-{count}", per_class, count, cpus, epochs, method)
                config = load_config(layout.root / "params.yaml")
                ensure_ray(config, local_cpus=cpus)
                trained = fit(config, layout, config.backbones[0], method, 0)
                later = trained.progress.history[1:] or trained.progress.history
                train_images = per_class * config.datasets.synth.classes
                rows.append({"backbone": config.backbones[0], "method": method, "train_images": train_images,
                             "workers": count, "cpus_per_worker": cpus // count,
                             "train_s_per_epoch": statistics.mean(train_images / e["images_per_s"] for e in later),
                             "epoch_s": statistics.mean(e["epoch_s"] for e in later)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 200], help="training images per class")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs shared by the workers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--method", default="cam")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.images, args.workers, args.cpus, args.epochs, args.method)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{rows[0]['backbone']} {args.method}, {args.cpus} CPUs, mean of epochs 2..{args.epochs}")
    print(f"{'train images':>12s} {'workers':>7s} {'train s/epoch':>13s} {'epoch s (with val)':>18s}")
    for row in rows:
        print(f"{row['train_images']:12d} {row['workers']:7d} {row['train_s_per_epoch']:13.1f} {row['epoch_s']:18.1f}")


if __name__ == "__main__":
    main()
