"""The benchmark's report: the paper's tables with 95 % intervals, the floor, paired differences,
where the CAMs go, Table 2's ablation, and CAM galleries, in Markdown.

    report/<dataset>/report.md, boxacc_<backbone>.png, gallery_<backbone>.jpg

Numbers come from results/<dataset>/<run>/ (the evaluate stage, on test: metrics.json and the
per-image records) and results/<dataset>/center-gaussian/ (the baseline stage). A cell is a run's
value, or with several seeds their mean ± std; in brackets the 95 % bootstrap interval over test
images (of the mean over seeds, every seed resampled with the same images). Differences between
methods are paired: the same resampled images for both. Galleries run the exported networks on
test images, boxes at each run's val-optimal threshold.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import SplitImages, eval_transform
from pipeline.export_folder import TORCHSCRIPT, load_exported
from pipeline.figures import GalleryCollector, grid, line_plot, save_picture
from pipeline.metrics import BoxRecords, MaskRecords, mean_interval, paired_difference
from pipeline.paths import RECORDS, Layout, replaced_atomically
from pipeline.registry import BACKBONES, METHODS

NAMES = {name: entry.display for name, entry in METHODS.items()}
BACKBONE_NAMES = {name: entry.display for name, entry in BACKBONES.items()}
FLOOR = "Center Gaussian (floor)"
PAPER_METHOD = "icl"
TABLE2_BASELINE = "adl"  # the paper's Table 2 "Baseline [9]"


@dataclass(frozen=True)
class Runs:
    """One method on one backbone (or the floor): its seeds' metrics.json and per-image records."""

    metrics: list[dict]
    box: list[BoxRecords]
    mask: list[MaskRecords]

    @classmethod
    def load(cls, folders: list[Path]) -> Runs:
        metrics, box, mask = [], [], []
        for folder in folders:
            path = folder / "metrics.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the stage that writes {folder.name}")
            metrics.append(json.loads(path.read_text()))
            for kind, out in ((BoxRecords, box), (MaskRecords, mask)):
                records = folder / RECORDS / f"{'box' if kind is BoxRecords else 'mask'}.npz"
                if records.is_file():
                    out.append(kind.load(records))
        return cls(metrics, box, mask)

    def records(self, key: str) -> list:
        return self.mask if key == "pxap" else self.box

    def values(self, key: str) -> list[float] | None:
        values = [m.get(key) for m in self.metrics]
        return None if any(v is None for v in values) else values

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return None if values is None else float(np.mean(values))

    def cell(self, key: str, bootstrap: dict, iou_thresholds: tuple[int, ...], bold: bool = False) -> str:
        """'v [low, high]', or 'mean ± std [low, high]' over seeds; '-' where the metric does not apply."""
        values = self.values(key)
        if values is None:
            return "-"
        if len(values) == 1:
            low, high = self.metrics[0]["ci95"][key]
            text = f"{values[0]:.2f}"
        else:
            _, low, high = mean_interval(self.records(key), key, iou_thresholds, bootstrap["samples"], bootstrap["seed"])
            text = f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
        return f"{'**' + text + '**' if bold else text} [{low:.1f}, {high:.1f}]"


def _mean_shares(per_seed: list[list[float] | None], regions: int) -> list[str]:
    """Mean over seeds of region shares, in %; '-' where some seed has none (its maps were constant)."""
    if any(shares is None for shares in per_seed):
        return ["-"] * regions
    return [f"{100 * v:.1f}" for v in np.mean(per_seed, axis=0)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _load(config: Config, layout: Layout) -> tuple[dict[tuple[str, str], Runs], Runs]:
    runs = {(b, m): Runs.load([layout.results(config.dataset, b, m, s) for s in config.seeds])
            for b in config.backbones for m in config.methods}
    return runs, Runs.load([layout.baseline(config.dataset)])


class Report:
    """The report's sections, from the loaded runs."""

    def __init__(self, config: Config, runs: dict[tuple[str, str], Runs], floor: Runs):
        self.config, self.runs, self.floor = config, runs, floor
        first = next(iter(runs.values())).metrics[0]
        self.bootstrap = first["bootstrap"]
        self.ious = tuple(config.evaluate.iou_thresholds)

    def metric_table(self, key: str, with_floor: bool = True) -> str:
        """Methods x backbones of one metric (the best mean of each column in bold), and the floor."""
        config = self.config
        best = {b: max((self.runs[b, m].mean(key) for m in config.methods if self.runs[b, m].mean(key) is not None),
                       default=None) for b in config.backbones}
        rows = [[NAMES[m], *(self.runs[b, m].cell(key, self.bootstrap, self.ious,
                                                  bold=len(config.methods) > 1 and self.runs[b, m].mean(key) == best[b])
                             for b in config.backbones)] for m in config.methods]
        if with_floor and self.floor.values(key) is not None:
            rows.append([FLOOR, *[self.floor.cell(key, self.bootstrap, self.ious)] * len(config.backbones)])
        return _table(["Method", *(BACKBONE_NAMES[b] for b in config.backbones)], rows)

    def detail_table(self) -> str:
        deltas = [str(d) for d in self.ious]
        rows = []
        for (backbone, method), runs in [*self.runs.items(), (("", ""), self.floor)]:
            name = NAMES[method] if method else FLOOR
            thresholds = [np.mean([m["optimal_threshold"][d] for m in runs.metrics]) for d in deltas]
            rows.append([name, BACKBONE_NAMES.get(backbone, "-"),
                         *(runs.cell(f"maxboxacc_{d}", self.bootstrap, self.ious) for d in deltas),
                         runs.cell("maxboxacc_v2", self.bootstrap, self.ious), *(f"{t:.2f}" for t in thresholds)])
        return _table(["Method", "Backbone", *(f"MaxBoxAcc@{d}" for d in deltas), "MaxBoxAccV2",
                       *(f"τ*@{d}" for d in deltas)], rows)

    def _difference(self, a: Runs, b: Runs, key: str = "maxboxacc_v2") -> tuple[float, float, float]:
        return paired_difference(a.records(key), b.records(key), key, self.ious, self.bootstrap["samples"],
                                 self.bootstrap["seed"])

    def paired_section(self) -> list[str]:
        """The paper's method against each other method and the floor, and what that says of its claim."""
        config = self.config
        if PAPER_METHOD not in config.methods:
            return []
        rows, verdicts = [], []
        for backbone in config.backbones:
            ours = self.runs[backbone, PAPER_METHOD]
            for method in [m for m in config.methods if m != PAPER_METHOD] + [None]:
                other = self.runs[backbone, method] if method else self.floor
                difference, low, high = self._difference(ours, other)
                verdict = "ahead" if low > 0 else "behind" if high < 0 else "no difference resolved"
                rows.append([NAMES[PAPER_METHOD], NAMES[method] if method else FLOOR, BACKBONE_NAMES[backbone],
                             f"{difference:+.2f}", f"[{low:+.2f}, {high:+.2f}]", verdict])
                if method in ("cam", "adl"):
                    verdicts.append((NAMES[method], BACKBONE_NAMES[backbone], verdict))
        lines = ["## The paper's claim: paired differences in MaxBoxAccV2", "",
                 f"{NAMES[PAPER_METHOD]} minus each other run, on the same test images (paired bootstrap, "
                 f"{self.bootstrap['samples']} resamples; with several seeds, of the means over seeds). 'ahead' and "
                 "'behind': the 95 % interval excludes 0.", "",
                 _table(["Method", "Against", "Backbone", "Δ MaxBoxAccV2", "95 % interval", "Verdict"], rows), ""]
        if verdicts:
            ahead = [v for v in verdicts if v[2] == "ahead"]
            if len(ahead) == len(verdicts):
                claim = "This run supports the paper's claim: its method localizes better than " + \
                        ", ".join(f"{m} ({b})" for m, b, _ in verdicts) + " beyond the test set's noise."
            else:
                shortfalls = ", ".join(f"{m} ({b}): {v}" for m, b, v in verdicts if v != "ahead")
                claim = (f"This run does not support the paper's claim that its method localizes better than CAM and "
                         f"ADL: {shortfalls}.")
            lines += [claim, ""]
        return lines

    def regions_section(self) -> list[str]:
        """Where the CAMs go: mass and optimal-threshold box shares per region, against the prior."""
        first = self.floor.metrics[0].get("regions")
        if first is None:
            return []
        names = first["names"]
        rows = [["Pixels (prior)", "-", *(f"{100 * v:.1f}" for v in first["prior"]), *["-"] * len(names)]]
        for (backbone, method), runs in [*self.runs.items(), (("", ""), self.floor)]:
            regions = [m["regions"] for m in runs.metrics]
            rows.append([NAMES[method] if method else FLOOR, BACKBONE_NAMES.get(backbone, "-"),
                         *_mean_shares([r["cam_mass"] for r in regions], len(names)),
                         *_mean_shares([r.get("box") for r in regions], len(names))])
        header = ["Method", "Backbone", *(f"CAM on {n}" for n in names), *(f"box on {n}" for n in names)]
        synth = names == ["background", "context", "body", "part"]
        legend = ("part: the discriminative head; body: the rest of the object; context: background carrying the "
                  "class's own texture; background: the rest. CAM on the part far above its pixel share is the "
                  "part-domination failure; CAM on context the spill onto class-correlated background." if synth else
                  "object and background as the GT masks split them.")
        return ["## Where the CAMs go (the failure modes as numbers)", "",
                "Share (%) of CAM mass on each region, and of the box at the IoU-50 optimal threshold τ* (the box of "
                f"the largest connected component), averaged over test images. {legend}", "",
                _table(header, rows), ""]

    def ablation_section(self) -> list[str]:
        """Table 2's layout: the paper's method without each component, with paired differences to the full one."""
        config = self.config
        variants = [m for m in config.methods if METHODS[m].ablates is not None]
        if not variants or PAPER_METHOD not in config.methods:
            return []
        lines = ["## Ablation (Table 2 layout)", "",
                 "MaxBoxAccV2 at each IoU; Mean with, in parentheses, its paired difference to the full method and "
                 "that difference's 95 % interval.", ""]
        order = ([TABLE2_BASELINE] if TABLE2_BASELINE in config.methods else []) + variants + [PAPER_METHOD]
        for backbone in config.backbones:
            full = self.runs[backbone, PAPER_METHOD]
            rows = []
            for method in order:
                runs = self.runs[backbone, method]
                mean = runs.cell("maxboxacc_v2", self.bootstrap, self.ious)
                if method != PAPER_METHOD:
                    difference, low, high = self._difference(runs, full)
                    mean += f" ({difference:+.2f} [{low:+.2f}, {high:+.2f}])"
                rows.append([NAMES[method], *(runs.cell(f"maxboxacc_{d}", self.bootstrap, self.ious) for d in self.ious),
                             mean])
            lines += [f"{BACKBONE_NAMES[backbone]}:", "",
                      _table(["Method", *(f"MaxBoxAcc@{d}" for d in self.ious), "Mean"], rows), ""]
        return lines

    def seeds_section(self) -> list[str]:
        if len(self.config.seeds) < 2:
            return []
        rows = [[NAMES[m], BACKBONE_NAMES[b], *(f"{v:.2f}" for v in runs.values("maxboxacc_v2")),
                 f"{np.std(runs.values('maxboxacc_v2'), ddof=1):.2f}"] for (b, m), runs in self.runs.items()]
        return ["## Seeds", "", "MaxBoxAccV2 of each seed and their standard deviation.", "",
                _table(["Method", "Backbone", *(f"seed {s}" for s in self.config.seeds), "std"], rows), ""]


def _curves(config: Config, layout: Layout, backbone: str, path: Path) -> Path:
    """BoxAcc at IoU 50 against tau on test, one line per method, first seed (the evaluate stage's boxacc.csv)."""
    lines = []
    for method in config.methods:
        with (layout.results(config.dataset, backbone, method, config.seeds[0]) / "boxacc.csv").open() as f:
            rows = list(csv.DictReader(f))
        lines.append((NAMES[method], [float(r["threshold"]) for r in rows], [float(r["iou_50"]) for r in rows], "-"))
    return line_plot(lines, path, title=f"{config.dataset} test, {BACKBONE_NAMES[backbone]}",
                     ylabel="BoxAcc at IoU 50 (%)")


def _gallery(config: Config, layout: Layout, info: DatasetInfo, backbone: str, path: Path) -> Path:
    """One row per method (first seed), the same test images (spread over the split) in each."""
    metadata = info.metadata("test")
    count = config.report.gallery_images
    picks = np.linspace(0, len(metadata) - 1, count).round().astype(int)
    tiles = []
    for method in config.methods:
        exported, meta = load_exported(layout.export(config.dataset, backbone, method, config.seeds[0]) / TORCHSCRIPT)
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
    runs, floor = _load(config, layout)
    report = Report(config, runs, floor)
    info = DatasetInfo.load(layout.split(config.dataset))
    out = layout.report(config.dataset)
    first = floor.metrics[0]
    seeds = f"{len(config.seeds)} seeds ({', '.join(map(str, config.seeds))}), mean ± std" \
        if len(config.seeds) > 1 else f"one seed ({config.seeds[0]})"
    parts = [
        f"# WSOL benchmark: {config.dataset}",
        "",
        f"Test split: {first['images']} images, {info.num_classes} classes; {seeds}. Protocol of *Evaluating WSOL "
        "Methods Right* (Choe et al., CVPR 2020): CAMs of the ground-truth class at 224×224, every threshold τ in "
        f"steps of {first['cam_curve_interval']}, boxes from every contour; hyperparameters and the exported model "
        "chosen on train-fullsup only. Accuracies in %, the best mean of each column in bold; in brackets the 95 % "
        f"bootstrap interval over test images ({report.bootstrap['samples']} resamples). The floor is the protocol's "
        "trivial baseline, one centred Gaussian for every image, scored by the same evaluator.",
        "",
        "## MaxBoxAccV2 (Table 4 layout)",
        "",
        "Mean of MaxBoxAcc over IoU 30, 50 and 70.",
        "",
        report.metric_table("maxboxacc_v2"),
        "",
        *report.paired_section(),
        "## MaxBoxAcc at each IoU (Table 5 layout)",
        "",
        "τ* is the threshold at which each MaxBoxAcc is reached (mean over seeds).",
        "",
        report.detail_table(),
        "",
        "## Top-1 localization (Table 6 layout)",
        "",
        "Correct class and IoU ≥ 0.5 at the IoU-50 optimal threshold.",
        "",
        report.metric_table("top1_loc", with_floor=False),
        "",
        "## GT-known localization",
        "",
        report.metric_table("gt_known_loc"),
        "",
        "## Top-1 classification (Table 7 layout)",
        "",
        report.metric_table("top1_cls", with_floor=False),
        "",
    ]
    if floor.values("pxap") is not None:
        parts += ["## PxAP", "", "Pixel average precision of the CAMs against the object masks.", "",
                  report.metric_table("pxap"), ""]
    parts += [*report.regions_section(), *report.ablation_section(), *report.seeds_section()]
    with replaced_atomically(out) as staging:
        for backbone in config.backbones:
            name = BACKBONE_NAMES[backbone]
            parts += [f"## {name}", ""]
            _curves(config, layout, backbone, staging / f"boxacc_{backbone}.png")
            parts += [f"![BoxAcc at IoU 50 against the CAM threshold, {name}](boxacc_{backbone}.png)", ""]
            _gallery(config, layout, info, backbone, staging / f"gallery_{backbone}.jpg")
            parts += [f"CAMs on test images, one row per method ({', '.join(NAMES[m] for m in config.methods)}), seed "
                      f"{config.seeds[0]}: ground truth red, the box at the run's val-optimal threshold green.", "",
                      f"![CAM gallery, {name}](gallery_{backbone}.jpg)", ""]
        (staging / "report.md").write_text("\n".join(parts))
    return out / "report.md"
