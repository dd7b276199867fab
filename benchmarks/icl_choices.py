"""The paper's free choices measured on train-fullsup: each Table 2 row of the paper's method trained
with the pipeline's own model, optimizer, schedule and loop (``pipeline.train.epoch.train_epoch``),
in this process and without Ray, then scored every epoch on train-fullsup only (never on test).

Per run it prints what the choice is judged by: the largest epoch loss over the first epoch's, the
last epoch's top-1 on train-weaksup (under the masks) and on train-fullsup, its MaxBoxAccV2 on
train-fullsup (the protocol's selection score) and the mean over the last three epochs, the clipped
steps, and per tap the object AUC of A minus that of the channel mean of the same feature and the
share of images whose M_dfg is empty. Every epoch's figures go to ``--out`` as JSON lines (one file
per run, reused when complete, so an interrupted sweep resumes).

It reads the project as `dvc repro prepare pretrain@<backbone>` leaves it (the splits, the prepared
arrays, the pretrain stage's weights) and ``params.yaml``:

    python benchmarks/icl_choices.py --methods icl icl_lit_init icl_lit_empty --seeds 0 1 --out icl_choices/
    python benchmarks/icl_choices.py --methods icl --set method_settings.icl.fc_pixels=foreground --out icl_choices/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.dag.paths import Layout
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_loader
from pipeline.evaluation.scoring import score_split, val_scoring
from pipeline.models import build_model
from pipeline.settings import yaml_io
from pipeline.settings.config import validate_params
from pipeline.train.attention_probe import attention_localization
from pipeline.train.epoch import train_epoch
from pipeline.train.recipe import grad_scaler, optimizer_for, scheduler_for, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def configuration(overrides: list[str]):
    """params.yaml with dotted-key overrides ``key=value`` (values read as YAML)."""
    data = yaml_io.read(ROOT / "params.yaml")
    for item in overrides:
        key, _, value = item.partition("=")
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = yaml_io.parse(value, f"--set {key}")
    return validate_params(data, ROOT / "params.yaml", "params.yaml (with --set)")


def val_figures(model, info: DatasetInfo, config, prepared: Path) -> dict[str, float]:
    """train-fullsup: the protocol's scores and each tap's attention AUC (the model is left in train mode)."""
    device = torch.device("cpu")
    model.eval()
    scores = score_split(model.cams, info, "val", config.data, val_scoring(config), device, prepared=prepared)
    figures = attention_localization(model, info, config.data, config.evaluate.batch_size, device, prepared)
    model.train()
    return {**figures, **{f"val_{k}": v for k, v in scores.summary().items() if v is not None}}


def train(config, backbone: str, method: str, seed: int, out: Path) -> list[dict]:
    """Every epoch's figures of one run (epoch 0: before training), written to ``out`` as they come."""
    layout = Layout(ROOT)
    info = DatasetInfo.load(layout.split(config.dataset))
    prepared = layout.prepared(config.dataset)
    settings = config.backbone_settings.of(backbone)
    seed_everything(seed, 0, -1)
    model = build_model(backbone, method, info.num_classes, config, layout.pretrained(backbone))
    optimizer = optimizer_for(model, config, backbone, method)
    scheduler = scheduler_for(optimizer, config, backbone, method)
    scaler = grad_scaler(config, torch.device("cpu"))
    loader = split_loader(info, "train", config.data, settings.batch_size, train=True, prepared=prepared)
    rows = [{"epoch": 0, **val_figures(model, info, config, prepared)}]
    with out.open("w") as f:
        f.write(json.dumps(rows[0]) + "\n")
        for epoch in range(settings.epochs):
            started = time.perf_counter()
            seed_everything(seed, 0, epoch)
            stats = train_epoch(model, model, loader, optimizer, scaler, config, torch.device("cpu"), epoch,
                                 settings.epochs, 0, 1)
            scheduler.step()
            rows.append({"epoch": epoch + 1, **stats, **val_figures(model, info, config, prepared),
                         "epoch_s": time.perf_counter() - started})
            f.write(json.dumps(rows[-1]) + "\n")
            f.flush()
    return rows


def summary(rows: list[dict]) -> dict[str, object]:
    trained = rows[1:]
    last = trained[-1]
    taps = sorted({k.split("/")[1] for k in last if k.startswith("attention/")})

    def figure(tap: str, name: str) -> float:
        return last.get(f"attention/{tap}/{name}", float("nan"))

    return {"loss_ratio": max(r["loss"] for r in trained) / trained[0]["loss"],
            "train_top1": last["train_top1_cls"], "val_top1": last["val_top1_cls"],
            "val_maxboxacc_v2": last["val_maxboxacc_v2"],
            "val_maxboxacc_v2_last3": float(np.mean([r["val_maxboxacc_v2"] for r in trained[-3:]])),
            "clipped": sum(r.get("grad/clipped_steps", 0) for r in trained),
            "auc_a": [figure(t, "val_auc_attention") for t in taps],
            "auc_minus_channel_mean": [figure(t, "val_auc_attention") - figure(t, "val_auc_channel_mean") for t in taps],
            "empty_dfg": [figure(t, "drop_empty") for t in taps], "taps": taps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["icl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--set", nargs="*", default=[], help="dotted params overrides, key=value")
    parser.add_argument("--out", type=Path, required=True, help="folder of the per-run JSON lines")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = configuration(args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"+{item}" for item in args.set)
    print(f"{'run':34s} {'loss x':>6s} {'train':>5s} {'val':>5s} {'MBAv2':>5s} {'last3':>5s} {'clip':>4s}  "
          "AUC(A) per tap | AUC(A) - AUC(channel mean) | empty M_dfg %")
    for method in args.methods:
        for seed in args.seeds:
            out = args.out / f"{method}{tag}-seed{seed}.jsonl"
            epochs = config.backbone_settings.of(args.backbone).epochs
            rows = [json.loads(line) for line in out.open()] if out.is_file() else []
            if len(rows) != epochs + 1:
                rows = train(config, args.backbone, method, seed, out)
            s = summary(rows)
            print(f"{out.stem:34s} {s['loss_ratio']:6.2f} {s['train_top1']:5.1f} {s['val_top1']:5.1f} "
                  f"{s['val_maxboxacc_v2']:5.1f} {s['val_maxboxacc_v2_last3']:5.1f} {s['clipped']:4.0f}  "
                  + " ".join(f"{v:.2f}" for v in s["auc_a"]) + " | "
                  + " ".join(f"{v:+.2f}" for v in s["auc_minus_channel_mean"]) + " | "
                  + " ".join(f"{100 * v:.0f}" for v in s["empty_dfg"]), flush=True)


if __name__ == "__main__":
    main()
