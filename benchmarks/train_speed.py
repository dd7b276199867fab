"""Training throughput of candidate CPU backbones, side by side: what chose the default profile.

Times forward + backward + SGD steps of the WSOL model the pipeline builds (backbone variant and
method plug-in), and of torchvision's plain classifier (what the pretrain stage trains), on random
batches, after two warm-up steps. One process, one line per candidate, images per second:

    python benchmarks/train_speed.py --threads 2 --batch 16 --crop 80 --steps 6
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.config import load_config, validate
from pipeline.models import build_model
from pipeline.train.pretrain import classifier

CANDIDATES = [  # (backbone, method, large_feature_map)
    ("resnet50", "cam", True), ("resnet18", "cam", True), ("resnet18", "cam", False),
    ("resnet18", "adl", True), ("resnet18", "icl", True),
]


def _rate(step, batch: int, steps: int) -> float:
    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def wsol_rate(backbone: str, method: str, large: bool, batch: int, crop: int, steps: int) -> float:
    data = load_config("params.yaml").model_dump(mode="json")
    data["backbone_settings"][backbone].update(large_feature_map=large, pretrained=None)
    model = build_model(backbone, method, 4, validate(data)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = torch.randn(batch, 3, crop, crop), torch.randint(0, 4, (batch,))

    def step():
        x, targets = model.method.augment(images, labels)
        loss = sum(model.method.losses(model(x, targets.labels), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _rate(step, batch, steps)


def plain_rate(backbone: str, batch: int, crop: int, steps: int) -> float:
    model = classifier(backbone, 16).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = torch.randn(batch, 3, crop, crop), torch.randint(0, 16, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _rate(step, batch, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=80)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} threads, batch {args.batch}, {args.crop} px, {args.steps} timed steps; images/s")
    for backbone, method, large in CANDIDATES:
        rate = wsol_rate(backbone, method, large, args.batch, args.crop, args.steps)
        print(f"{backbone:9s} {method:4s} WSOL variant, {'large' if large else 'small'} map: {rate:6.1f}")
    for backbone in ("resnet50", "resnet18"):
        print(f"{backbone:9s} plain torchvision classifier (pretrain):   {plain_rate(backbone, args.batch, args.crop, args.steps):6.1f}")


if __name__ == "__main__":
    main()
