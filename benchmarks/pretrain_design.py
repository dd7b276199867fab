"""The pretrain stage's design, measured: held-out top-1 of the stand-in classifier, the colour-only
baseline beside it, and the time it took, for a pretrain setting changed from params.yaml's.

    python benchmarks/pretrain_design.py                                   # params.yaml's settings
    python benchmarks/pretrain_design.py --set image_size=40 crop=32       # a smaller input
    python benchmarks/pretrain_design.py --set images_per_class=800 epochs=8

Runs what the stage runs (generation, the held-out split, training, held-out top-1) in this process
on 2 threads, with no MLflow run and nothing written.
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.settings import yaml_io
from pipeline.settings.config import load_config
from pipeline.train.pretrain import (
    CLASSES,
    classifier,
    colour_only_top1,
    generate,
    held_out_split,
    held_out_top1,
    train_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="pretrain settings to change")
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config("params.yaml")
    changes = {key: yaml_io.parse(value, f"--set {key}") for key, value in (item.split("=", 1) for item in args.set)}
    settings = config.pretrain.model_copy(update=changes)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    images = generate(settings, config.datasets.synth.classes)
    generated = time.perf_counter() - started
    train, held = held_out_split(images.labels, settings.seed)
    model = classifier(args.backbone, len(CLASSES))
    started = time.perf_counter()
    train_classifier(model, images, train, settings, torch.device("cpu"))
    trained = time.perf_counter() - started
    top1 = held_out_top1(model, images, held, settings.crop, torch.device("cpu"))
    print(f"{changes or 'params.yaml'}: held-out top-1 {top1:.2f} % ({len(held)} images), colour alone "
          f"{colour_only_top1(images, train, held):.2f} %, generation {generated:.1f} s, training {trained:.1f} s")


if __name__ == "__main__":
    main()
