"""Training throughput side by side: the bare step, our training loop, the data loader alone, and the
paper's method against CAM, for one backbone, input size, batch and device.

- bare: forward + backward + gradient clipping + SGD of the WSOL network the pipeline builds, with the
  training recipe's optimizer, autocast and step (``pipeline.train.recipe``), on one fixed batch already
  on the device (the machine's limit for that model and step);
- loop: our training loop (``pipeline.train.epoch.train_epoch``) on the same settings over a generated
  dataset, data loading included (``--data``: the prepare stage's arrays or the image files), validation
  excluded; after a warm-up epoch; and the same loop without the per-term gradient norms
  (``train.grad_terms_every: 0``): the cost of that diagnostic, one extra backward per loss term on the
  first of the epoch's ``--steps`` steps (the DAG measures one step in 25);
- loader: the training loader alone (decode or slice, resize, crop, flip, normalise, collate) in one
  process with one thread, as one DataLoader worker runs it, on CUB-like 500x375 JPEGs, from the files
  and from the prepared uint8 array;
- bare in Ray (``--in-ray``): the same bare step in a Ray task holding ``--threads`` CPUs, as a Ray Train
  worker runs it (Ray's process, niceness and environment; its other processes beside it);
- ICL / CAM: the step-time ratio of the bare steps, beside the ratio of their floating-point operations
  (forward + backward, torch.utils.flop_counter): the part of the time ratio that is arithmetic.

    python benchmarks/train_speed.py --backbone resnet50 --crop 80 --resize 96 --batch 16 --threads 2
    python benchmarks/train_speed.py --backbone resnet18 --methods cam --in-ray
    python benchmarks/train_speed.py --backbone resnet50 --crop 224 --resize 256 --batch 64 --device cuda --amp bf16 --channels-last --json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from pipeline.dag.paths import Layout
from pipeline.data import acquire
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_images, split_loader
from pipeline.data.prepared import prepare_splits
from pipeline.models import build_model
from pipeline.settings.config import load_config, validate
from pipeline.train.epoch import train_epoch
from pipeline.train.recipe import autocast, channels_last, grad_scaler, optimization_step, optimizer_for, place_model

CLASSES = 4
PHOTO_SIZE = (500, 375)  # px (width, height): CUB's typical image


def configuration(args: argparse.Namespace, root: Path | None = None) -> dict:
    """params.yaml with this run's settings: the backbone from random init, the size, the batch, the device."""
    data = load_config("params.yaml").model_dump(mode="json")
    data["backbone_settings"][args.backbone].update(pretrained=None, batch_size=args.batch)
    data["data"].update(resize=args.resize, crop=args.crop, loader_workers=args.loader_workers,
                        pin_memory=args.device.startswith("cuda"))
    data["train"].update(amp=args.amp, channels_last=args.channels_last)
    if root is not None:
        data["dataset"], data["datasets"]["custom"]["root"] = "custom", str(root)
    return data


def write_photos(root: Path, images: int, seed: int = 0) -> None:
    """A dataset in the custom layout: ``images`` JPEGs (quality 90) in train, two in val and test, of
    smooth random colour fields with pixel noise (entropy near a photo's), one box each."""
    rng = np.random.default_rng(seed)
    width, height = PHOTO_SIZE
    for split, count in (("train", images), ("val", 2), ("test", 2)):
        folder = root / "metadata" / split
        folder.mkdir(parents=True)
        ids = [f"{split}/{k:05d}.jpg" for k in range(count)]
        (root / split).mkdir()
        for image_id in ids:
            coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize(PHOTO_SIZE, Image.BICUBIC), np.float64)
            pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / image_id, quality=90)
        (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
        (folder / "class_labels.txt").write_text("".join(f"{i},{k % CLASSES}\n" for k, i in enumerate(ids)))
        (folder / "image_sizes.txt").write_text("".join(f"{i},{width},{height}\n" for i in ids))
        if split != "train":
            (folder / "localization.txt").write_text("".join(f"{i},10,10,200,200\n" for i in ids))


def _timed(step, repeats: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after two warm-up calls."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats


def _model(config, backbone: str, method: str, device: torch.device):
    torch.manual_seed(0)
    model = place_model(build_model(backbone, method, CLASSES, config).train(), config, device)
    return model, optimizer_for(model, config, backbone, method), grad_scaler(config, device)


def bare_step(config, backbone: str, method: str, batch: int, device: torch.device, steps: int) -> float:
    """Seconds per training step on one fixed batch on the device."""
    model, optimizer, scaler = _model(config, backbone, method, device)
    crop = config.data.crop
    images = torch.randn(batch, 3, crop, crop, device=device)
    if channels_last(config, device):
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch, device=device) % CLASSES

    def step():
        x, targets = model.method.augment(images, labels)
        with autocast(config, device):
            loss = sum(model.method.losses(model(x, targets.labels), targets).values())
        optimization_step(loss, model.parameters(), optimizer, scaler, config)

    return _timed(step, steps, device)


def bare_step_in_ray(config, backbone: str, method: str, batch: int, device: torch.device, steps: int,
                     threads: int) -> float:
    """``bare_step`` in a task of a local Ray holding ``threads`` CPUs (the GPU too on CUDA)."""
    import ray

    gpus = 1 if device.type == "cuda" else 0
    ray.init(num_cpus=threads, num_gpus=gpus, include_dashboard=False, logging_level="WARNING")
    try:
        def task():
            torch.set_num_threads(threads)  # as the Ray Train worker does (pipeline.train.worker)
            return bare_step(config, backbone, method, batch, device, steps)
        return ray.get(ray.remote(num_cpus=threads, num_gpus=gpus)(task).remote())
    finally:
        ray.shutdown()


def step_flops(config, backbone: str, method: str) -> float:
    """Floating-point operations of one image's forward and backward (batch 2, CPU, float32)."""
    model = build_model(backbone, method, CLASSES, config).train()
    crop = config.data.crop
    images, labels = torch.randn(2, 3, crop, crop), torch.arange(2)
    with FlopCounterMode(display=False) as counter:
        x, targets = model.method.augment(images, labels)
        sum(model.method.losses(model(x, targets.labels), targets).values()).backward()
    return counter.get_total_flops() / 2


def loop_rate(config, backbone: str, method: str, info: DatasetInfo, prepared: Path | None, device: torch.device) -> float:
    """Images/s of our training loop over the dataset's train split (its second epoch)."""
    model, optimizer, scaler = _model(config, backbone, method, device)
    batch = config.backbone_settings.of(backbone).batch_size
    loader = split_loader(info, "train", config.data, batch, train=True, prepared=prepared)

    def epoch() -> dict[str, float]:
        return train_epoch(model, model, loader, optimizer, scaler, config, device, 0, 1, 0, 1)

    epoch()
    return epoch()["images_per_s"]


def loader_rate(info: DatasetInfo, config, prepared: Path | None, batch: int) -> float:
    """Images/s of one loader process (one thread) over the train split: batches as training gets them."""
    images = split_images(info, "train", config.data, train=True, prepared=prepared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a DataLoader worker process runs
    try:
        started = time.perf_counter()
        count = sum(len(labels) for _, labels, _ in DataLoader(images, batch_size=batch, shuffle=True))
        return count / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_photos(root / "photos", args.batch * args.steps)
        settings = configuration(args, root / "photos")
        config = validate(settings, "params.yaml (benchmark settings)")
        undiagnosed = validate({**settings, "train": {**settings["train"], "grad_terms_every": 0}},
                               "params.yaml (benchmark settings, no term gradient norms)")
        layout = Layout(root)
        acquire.download(config, layout)
        info = acquire.split(config, layout)
        prepared = layout.prepared("custom")
        started = time.perf_counter()
        prepare_splits(info, config.data, prepared)
        prepare_s = time.perf_counter() - started
        sources = {"files": None, "prepared": prepared}
        result = {"settings": {**vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
                  "loader": {name: loader_rate(info, config, path, args.batch) for name, path in sources.items()},
                  "prepare_s_per_image": prepare_s / (args.batch * args.steps + 2),
                  "methods": {}}
        for method in args.methods:
            bare = bare_step(config, args.backbone, method, args.batch, device, args.steps)
            loop = loop_rate(config, args.backbone, method, info, sources[args.data], device)
            plain = loop_rate(undiagnosed, args.backbone, method, info, sources[args.data], device)
            result["methods"][method] = {"bare_images_per_s": args.batch / bare, "loop_images_per_s": loop,
                                         "loop_no_term_norms_images_per_s": plain,
                                         "loop_share": loop * bare / args.batch, "step_s": bare,
                                         "gflops_per_image": step_flops(config, args.backbone, method) / 1e9}
            if args.in_ray:
                in_ray = bare_step_in_ray(config, args.backbone, method, args.batch, device, args.steps, args.threads)
                result["methods"][method]["bare_in_ray_images_per_s"] = args.batch / in_ray
    if "cam" in result["methods"]:
        cam = result["methods"]["cam"]
        for row in result["methods"].values():
            row["step_ratio_to_cam"] = row["step_s"] / cam["step_s"]
            row["flop_ratio_to_cam"] = row["gflops_per_image"] / cam["gflops_per_image"]
    return result


def table(result: dict) -> str:
    s = result["settings"]
    lines = [f"{s['backbone']} at {s['crop']} px (resize {s['resize']}), batch {s['batch']}, {s['device_name']}, "
             f"{s['threads']} threads, amp {s['amp']}, channels_last {s['channels_last']}, torch {s['torch']}; "
             f"loop data: {s['data']}, {s['loader_workers']} loader workers",
             f"{'method':8s} {'bare img/s':>10s} {'loop img/s':>10s} {'no norms':>8s} {'loop/bare':>9s} {'GFLOP/img':>9s} "
             f"{'step/CAM':>8s} {'FLOP/CAM':>8s}" + (f" {'bare in Ray':>11s}" if s["in_ray"] else "")]
    for method, row in result["methods"].items():
        ratios = (f"{row['step_ratio_to_cam']:8.2f} {row['flop_ratio_to_cam']:8.2f}" if "step_ratio_to_cam" in row
                  else f"{'':8s} {'':8s}")
        lines.append(f"{method:8s} {row['bare_images_per_s']:10.1f} {row['loop_images_per_s']:10.1f} "
                     f"{row['loop_no_term_norms_images_per_s']:8.1f} "
                     f"{row['loop_share']:9.0%} {row['gflops_per_image']:9.2f} {ratios}"
                     + (f" {row['bare_in_ray_images_per_s']:11.1f}" if s["in_ray"] else ""))
    loader = result["loader"]
    lines.append(f"loader, one worker (1 thread), {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs -> {s['crop']} px: "
                 f"files {loader['files']:.0f} img/s, prepared {loader['prepared']:.0f} img/s "
                 f"({loader['prepared'] / loader['files']:.1f}x); preparing: {result['prepare_s_per_image'] * 1e3:.1f} ms/img once")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--methods", nargs="+", default=["cam", "icl"])
    parser.add_argument("--crop", type=int, default=80)
    parser.add_argument("--resize", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (and loop batches per epoch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=0, help="the loop's DataLoader processes (data.loader_workers)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--data", choices=["prepared", "files"], default="prepared", help="the loop's data source")
    parser.add_argument("--in-ray", action="store_true", help="also time the bare step in a Ray task")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
