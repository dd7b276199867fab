"""Why Eq. 1's M_dfg is empty: on trained runs, each tap's A and the channel mean of the same feature
put through Eq. 1's thresholds, on train-fullsup (never on test).

M_dfg = 1[gamma_bg mean(A) < A < gamma_fg max(A)] is empty when no cell lies in that band: either A
is flat (max A <= gamma_bg mean A: M_fg is empty too) or it is one sharp peak over a flat rest. Per
run and tap this prints, for A and for the channel mean (ADL's attention, the block's start), the
share of images whose M_fg is empty (flat), whose M_dfg is empty, max/mean of the map (median over
images) and its mean (over images: the scale L_fc compares). The maps are the plain network's (eval
mode, nothing masked: the features the CAM is read from), so the figures read the trained features,
not one training step's masks. With
``--untrained`` the network is the one training starts from (the pretrain stage's backbone, the
method's modules as initialised, seed 0), built from ``params.yaml`` with ``--set`` overrides:

    python benchmarks/attention_masks.py runs/synth/resnet18-icl-seed0 runs/synth/resnet18-icl-seed1
    python benchmarks/attention_masks.py --untrained icl icl_lit_scale
    python benchmarks/attention_masks.py --untrained icl --set method_settings.icl.similarity_scale=sqrt_key
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from icl_choices import configuration  # this folder's: params.yaml with --set overrides

from pipeline.dag.paths import Layout
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_loader
from pipeline.formats.run_folder import read_run
from pipeline.models import WSOLModel, build_model
from pipeline.models.attention import attention_thresholds, dropped_foreground_mask, foreground_mask, is_empty
from pipeline.settings.config import Config
from pipeline.train.recipe import seed_everything

ROOT = Path(__file__).resolve().parents[1]


def trained(folder: Path) -> tuple[WSOLModel, Config]:
    """A run folder's network (eval mode) and the config it was trained with."""
    run = read_run(folder)
    return run.model, run.meta.settings


def untrained(method: str, backbone: str, config: Config) -> tuple[WSOLModel, Config]:
    """The network training starts from (eval mode), and ``config``."""
    layout = Layout(ROOT)
    seed_everything(0, 0, -1)
    info = DatasetInfo.load(layout.split(config.dataset))
    return build_model(backbone, method, info.num_classes, config, layout.pretrained(backbone)).eval(), config


@torch.no_grad()
def band_figures(model: WSOLModel, config: Config) -> dict[tuple[str, str], dict[str, float]]:
    """(tap, map) -> {"flat": share of images with an empty M_fg, "empty_dfg": with an empty M_dfg,
    "max_over_mean": median of max/mean, "mean": the map's mean} over train-fullsup, for a model of the
    paper's method."""
    hyper = model.method.hyper
    layout = Layout(ROOT)
    info = DatasetInfo.load(layout.split(config.dataset))
    figures: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for images, _, _ in split_loader(info, "val", config.data, 16, train=False, prepared=layout.prepared(config.dataset)):
        def record(tap: str, feature: torch.Tensor) -> torch.Tensor:
            for name, attention in model.method.attention_maps(tap, feature).items():
                theta_fg, theta_bg = attention_thresholds(attention, hyper.gamma_fg, hyper.gamma_bg)
                row = figures[tap, name]
                row["flat"] += is_empty(foreground_mask(attention, theta_bg)).flatten().tolist()
                row["empty_dfg"] += is_empty(dropped_foreground_mask(attention, theta_fg, theta_bg)).flatten().tolist()
                ratio = attention.amax(dim=(1, 2, 3)) / attention.mean(dim=(1, 2, 3))
                row["max_over_mean"] += ratio.tolist()
                row["mean"] += attention.mean(dim=(1, 2, 3)).tolist()
            return feature

        model.backbone(images, record)
    return {key: {"flat": float(np.mean(row["flat"])), "empty_dfg": float(np.mean(row["empty_dfg"])),
                  "max_over_mean": float(np.median(row["max_over_mean"])), "mean": float(np.mean(row["mean"]))}
            for key, row in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (runs/<dataset>/<run>)")
    parser.add_argument("--untrained", nargs="*", default=[], help="methods, as training starts them")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--set", nargs="*", default=[], help="dotted params overrides for --untrained, key=value")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [(folder.name, lambda folder=folder: trained(folder)) for folder in args.runs]
    config = configuration(args.set) if args.untrained else None
    models += [(f"{method} at step 0", lambda method=method: untrained(method, args.backbone, config))
               for method in args.untrained]
    print(f"{'network':32s} {'tap':9s} {'map':13s} {'flat %':>6s} {'empty M_dfg %':>13s} {'max/mean':>8s} {'mean':>6s}")
    for label, load in models:
        for (tap, name), f in band_figures(*load()).items():
            print(f"{label:32s} {tap:9s} {name:13s} {100 * f['flat']:6.1f} {100 * f['empty_dfg']:13.1f} "
                  f"{f['max_over_mean']:8.2f} {f['mean']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
