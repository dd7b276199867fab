"""The benchmark's report: the paper's tables with 95 % intervals, the rows that frame every method
(the floor, the pretrained features, the few-shot row) and where each method sits between them, paired
differences, where the CAMs go, Table 2's ablation, the backbones' pretraining, training cost, BoxAcc
curves, training curves, per-class results, the test images and CAM galleries, in Markdown, and the
data of dvc.yaml's plots.

    report/<dataset>/
        report.md
        dataset.png                 test images of each class with their GT boxes (and region maps)
        training.png                val MaxBoxAccV2 and val top-1 cls per epoch, one line per run
        boxacc_<backbone>.png       BoxAcc against the CAM threshold, one panel per IoU
        gallery_<backbone>.png      test CAMs, a labelled row per method, a column per outcome
        plots/val_maxboxacc_v2.csv  run, method, epoch, val_maxboxacc_v2 (%)
        plots/boxacc.csv            run, method, iou (%), threshold, boxacc (%)
        plots/pr_curve.csv          run, method, recall, precision (header only without masks)
        plots/<template>.json       their Vega-Lite templates (pipeline/report/plot_templates.py)

Numbers come from results/<dataset>/<run>/ (the evaluate stage, on test: metrics.json, the curves
and the per-image records), the reference rows' folders beside them (the baseline, features and
few_shot stages), runs/<dataset>/<run>/ (the train stage: history.csv, cost.json) and
pretrained/<backbone>/pretrain.json (the pretrain stage). A cell is a run's value, or with
several seeds their mean ± std; in brackets the 95 % bootstrap interval over test images (of the mean
over seeds, every seed resampled with the same images). Differences between methods are paired: the
same resampled images for both. Galleries run the exported networks on test images, boxes at each
run's val-optimal threshold, chosen per outcome (pipeline/report/gallery.py).
"""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.dag.paths import FEATURES_ROW, FEW_SHOT_ROW, FLOOR_ROW, RECORDS, Layout, replaced_atomically
from pipeline.dag.tracking import CODE, code_state
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.formats.records import RecordError, read_json
from pipeline.formats.run_cost import RunCost, read_cost
from pipeline.formats.search_result import SearchResult, apply_search, read_search
from pipeline.metrics import GT_KNOWN_IOU, BoxRecords, MaskRecords, mean_interval, paired_difference
from pipeline.report.colours import ROW_COLOURS, colours_by_name, method_colour
from pipeline.report.figures import curve_panels
from pipeline.report.gallery import OUTCOMES, SIZE_FACTOR, SUCCESS_IOU, dataset_examples, outcome_gallery
from pipeline.report.plot_templates import write_templates
from pipeline.settings.config import Config
from pipeline.settings.registry import BACKBONES, METHODS, PAPER_METHOD

NAMES = {name: entry.display for name, entry in METHODS.items()}
BACKBONE_NAMES = {name: entry.display for name, entry in BACKBONES.items()}
FLOOR = FLOOR_ROW
LOWER_ROWS = (FLOOR_ROW, FEATURES_ROW)  # the rows a method must beat to be bold in a table
TABLE2_BASELINE = "adl"  # the paper's Table 2 "Baseline [9]"
FLAT_MARGIN = 1.0  # BoxAcc points: a tau* is flat where BoxAcc stays this close to its max ...
FLAT_WIDTH = 0.25  # ... over a span of tau at least this wide around it
EXAMPLES_PER_CLASS = 3  # test images of each class in the dataset figure

Key = tuple[str, str]  # (backbone, method)
References = dict[str, dict[str, "Runs"]]  # row name -> backbone -> its runs (the floor: the same for every backbone)


@dataclass(frozen=True, eq=False)  # equal only to itself: a key of Report's paired differences
class Runs:
    """One method on one backbone (or the floor): its seeds' metrics.json and per-image records; or,
    pooled, on every backbone."""

    metrics: list[dict]
    box: list[BoxRecords]
    mask: list[MaskRecords]
    spread: bool = True  # cells show the std over runs (seeds); not for a mean over backbones

    @classmethod
    def load(cls, folders: list[Path]) -> Runs:
        metrics: list[dict] = []
        box: list[BoxRecords] = []
        mask: list[MaskRecords] = []
        for folder in folders:
            path = folder / "metrics.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the stage that writes {folder.name}")
            metrics.append(json.loads(path.read_text()))
            if (folder / RECORDS / "box.npz").is_file():
                box.append(BoxRecords.load(folder / RECORDS / "box.npz"))
            if (folder / RECORDS / "mask.npz").is_file():
                mask.append(MaskRecords.load(folder / RECORDS / "mask.npz"))
        return cls(metrics, box, mask)

    @classmethod
    def pooled(cls, runs: Iterable[Runs]) -> Runs:
        """Several backbones' runs of one method as one: their mean (over backbones and seeds, each backbone
        with the same seeds), its interval from the same resampled images for all, no std."""
        runs = list(runs)
        return cls([m for r in runs for m in r.metrics], [b for r in runs for b in r.box],
                   [k for r in runs for k in r.mask], spread=False)

    def records(self, key: str) -> list:
        return self.mask if key == "pxap" else self.box

    def curve(self, delta: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(tau (K,), BoxAcc (K,) in % at IoU ``delta``, mean over seeds) from the per-image records;
        None without box records."""
        if not self.box:
            return None
        k = self.box[0].deltas.index(delta)
        return self.box[0].thresholds, np.mean([100 * r.hits()[:, k].mean(axis=0) for r in self.box], axis=0)

    def values(self, key: str) -> list[float] | None:
        values = [m.get(key) for m in self.metrics]
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return None if values is None else float(np.mean(values))

    def cell(self, key: str, bootstrap: dict, iou_thresholds: tuple[int, ...], bold: bool = False) -> str:
        """'v [low, high]', or 'mean ± std [low, high]' over seeds (pooled: 'mean [low, high]'); '-' where the
        metric does not apply."""
        values = self.values(key)
        if values is None:
            return "-"
        if len(values) == 1:
            low, high = self.metrics[0]["ci95"][key]
            text = f"{values[0]:.2f}"
        else:
            _, low, high = mean_interval(self.records(key), key, iou_thresholds, bootstrap["samples"], bootstrap["seed"])
            text = f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if self.spread else "")
        return f"{'**' + text + '**' if bold else text} [{low:.1f}, {high:.1f}]"


def _best(column: dict[str, Runs], key: str, bar: float | None = None) -> set[str]:
    """The methods of a table column (method -> runs) with the best mean of ``key``; none where every
    known mean is the same (one method, or a tie of all), or where the best does not exceed ``bar``
    (the rows every WSOL method must beat: :meth:`Report._bar`)."""
    means = {method: runs.mean(key) for method, runs in column.items()}
    known = {method: mean for method, mean in means.items() if mean is not None}
    if len(set(known.values())) < 2 or (bar is not None and max(known.values()) <= bar):
        return set()
    return {method for method, mean in known.items() if mean == max(known.values())}


def flat_span(thresholds: np.ndarray, boxacc: np.ndarray) -> tuple[float, float] | None:
    """[a, b]: the τ around the first maximum of a BoxAcc curve (``boxacc`` (K,) in % over ascending
    ``thresholds`` (K,)) where it stays within FLAT_MARGIN points of that maximum, consecutively; None
    where that span is narrower than FLAT_WIDTH (τ* is then well defined)."""
    close = boxacc >= boxacc.max() - FLAT_MARGIN
    peak = int(np.argmax(boxacc))
    low = peak - int(np.argmin(close[peak::-1])) + 1 if not close[:peak + 1].all() else 0
    high = peak + int(np.argmin(close[peak:])) - 1 if not close[peak:].all() else len(close) - 1
    a, b = float(thresholds[low]), float(thresholds[high])
    return (a, b) if b - a >= FLAT_WIDTH - 1e-9 else None


def _optimal_threshold(runs: Runs, delta: int) -> tuple[str, tuple[float, float] | None]:
    """τ* at IoU ``delta``, mean over seeds, and its flat span (:func:`flat_span`, of the mean curve over
    seeds; None where it is not flat); '–' where every seed's MaxBoxAcc there is 0 (no τ gives a correct
    box, so no τ is optimal)."""
    if all(m[f"maxboxacc_{delta}"] == 0 for m in runs.metrics):
        return "–", None
    curve = runs.curve(delta)
    text = f"{np.mean([m['optimal_threshold'][str(delta)] for m in runs.metrics]):.2f}"
    return text, None if curve is None else flat_span(*curve)


def _duration(seconds: float) -> str:
    """'42 s', or from two minutes on '2.5 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _distinct(values: Iterable) -> str:
    """The values of several seeds, each once: '1', or '8, 10' where they differ."""
    return ", ".join(sorted({str(v) for v in values}))


def _mean_shares(per_seed: list[list[float] | None], regions: int) -> list[str]:
    """Mean over seeds of region shares, in %; '-' where some seed has none (its maps were constant)."""
    if any(shares is None for shares in per_seed):
        return ["-"] * regions
    return [f"{100 * v:.1f}" for v in np.mean(per_seed, axis=0)]  # type: ignore[arg-type]  # no None left


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


History = list[dict[str, float]]  # a training run's history.csv: one row per epoch


def _history(path: Path) -> History:
    """history.csv's rows, every value a number (an empty cell: NaN)."""
    return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in _rows(path)]


def reference_folders(config: Config, layout: Layout) -> dict[str, dict[str, Path]]:
    """Row name -> backbone -> the results folder of each row that frames every method."""
    return {FLOOR: {b: layout.baseline(config.dataset) for b in config.backbones},
            FEATURES_ROW: {b: layout.features(config.dataset, b) for b in config.backbones},
            FEW_SHOT_ROW: {b: layout.few_shot(config.dataset, b) for b in config.backbones}}


def _load(config: Config, layout: Layout) -> tuple[dict[Key, Runs], References, dict[Key, list[RunCost]], dict[Key, list[History]]]:
    """(runs, the reference rows, costs, training histories) of every backbone x method, over the config's
    seeds; the few-shot row's cost under the key (backbone, FEW_SHOT_ROW)."""
    runs = {(b, m): Runs.load([layout.results(config.dataset, b, m, s) for s in config.seeds])
            for b in config.backbones for m in config.methods}
    costs = {(b, m): [read_cost(layout.run(config.dataset, b, m, s)) for s in config.seeds]
             for b in config.backbones for m in config.methods}
    costs.update({(b, FEW_SHOT_ROW): [read_cost(layout.few_shot(config.dataset, b))] for b in config.backbones})
    histories = {(b, m): [_history(layout.run(config.dataset, b, m, s) / "history.csv") for s in config.seeds]
                 for b in config.backbones for m in config.methods}
    references = {name: {b: Runs.load([folder]) for b, folder in folders.items()}
                  for name, folders in reference_folders(config, layout).items()}
    return runs, references, costs, histories


def _tap_figures(history: History) -> dict[str, dict[str, float]]:
    """The last epoch's attention figures by tap: {tap: {figure: value}} (history.csv's attention/<tap>/<figure>)."""
    figures: dict[str, dict[str, float]] = {}
    for key, value in history[-1].items():
        if key.startswith("attention/"):
            _, tap, name = key.split("/")
            figures.setdefault(tap, {})[name] = value
    return figures


class Report:
    """The report's sections, from the loaded runs, their training costs and histories."""

    def __init__(self, config: Config, runs: dict[Key, Runs], references: References, costs: dict[Key, list[RunCost]],
                 histories: dict[Key, list[History]]):
        """``references``: the floor first, then any other rows, each per backbone."""
        self.config, self.runs, self.references, self.costs, self.histories = config, runs, references, costs, histories
        self.floor = next(iter(references[FLOOR].values()))
        first = next(iter(runs.values())).metrics[0]
        self.bootstrap = first["bootstrap"]
        self.ious = tuple(config.evaluate.iou_thresholds)
        self._differences: dict[tuple[Runs, Runs, str], tuple[float, float, float]] = {}

    def _bar(self, key: str, backbones: Iterable[str]) -> float | None:
        """The highest mean of ``key`` among the rows a WSOL method must beat to be called best (the
        floor: no training; the pretrained features: no WSOL training), pooled over ``backbones``; None
        where neither has the metric (top-1 cls). The few-shot row, which uses full supervision, is not a bar."""
        backbones = list(backbones)
        means = [Runs.pooled(self.references[name][b] for b in backbones).mean(key)
                 for name in LOWER_ROWS if name in self.references]
        known = [mean for mean in means if mean is not None]
        return max(known) if known else None

    def _reference_rows(self, key: str) -> list[tuple[str, dict[str, Runs]]]:
        """The rows that frame the methods and have ``key``."""
        return [(name, rows) for name, rows in self.references.items()
                if all(r.values(key) is not None for r in rows.values())]

    def _column(self, backbone: str) -> dict[str, Runs]:
        return {method: self.runs[backbone, method] for method in self.config.methods}

    def metric_table(self, key: str, with_floor: bool = True) -> str:
        """Methods x backbones of one metric and, with several backbones, their Mean (Table 4's); the
        best mean of each column in bold; the floor last."""
        config = self.config
        columns = {BACKBONE_NAMES[b]: self._column(b) for b in config.backbones}
        if len(config.backbones) > 1:
            columns["Mean"] = {m: Runs.pooled(self.runs[b, m] for b in config.backbones) for m in config.methods}
        backbones_of = {BACKBONE_NAMES[b]: [b] for b in config.backbones} | {"Mean": list(config.backbones)}
        best = {name: _best(column, key, self._bar(key, backbones_of[name])) for name, column in columns.items()}
        rows = [[NAMES[m], *(column[m].cell(key, self.bootstrap, self.ious, bold=m in best[name])
                             for name, column in columns.items())] for m in config.methods]
        for name, per_backbone in self._reference_rows(key) if with_floor else []:
            cells = [per_backbone[b].cell(key, self.bootstrap, self.ious) for b in config.backbones]
            if len(config.backbones) > 1:
                cells.append(cells[0] if name == FLOOR else
                             Runs.pooled(per_backbone[b] for b in config.backbones).cell(key, self.bootstrap, self.ious))
            rows.append([name, *cells])
        return _table(["Method", *columns], rows)

    def detail_table(self) -> str:
        """MaxBoxAcc at each IoU, MaxBoxAccV2 (the best method of each backbone in bold) and the optimal
        thresholds τ*, per run and for the floor; a τ* from a flat curve (:func:`flat_span`) marked †,
        with its span in a note below the table."""
        keys = [*(f"maxboxacc_{d}" for d in self.ious), "maxboxacc_v2"]
        best = {(b, key): _best(self._column(b), key, self._bar(key, [b])) for b in self.config.backbones for key in keys}
        named = [(NAMES[m], runs, b, {k: m in best[b, k] for k in keys})
                 for (b, m), runs in self.runs.items()]
        references = [(name, runs, backbone, dict.fromkeys(keys, False)) for name, runs, backbone in self._reference_runs()]
        rows, notes = [], []
        for name, runs, backbone, bold in [*named, *references]:
            shown = BACKBONE_NAMES.get(backbone, "-")
            thresholds = []
            for delta in self.ious:
                text, span = _optimal_threshold(runs, delta)
                thresholds.append(text + ("†" if span else ""))
                if span:
                    where = f"{name}, {shown}" if backbone else name
                    notes.append(f"- † {where}, τ*@{delta}: BoxAcc within {FLAT_MARGIN:g} point of its max over τ in "
                                 f"[{span[0]:.2f}, {span[1]:.2f}].")
            rows.append([name, shown, *(runs.cell(key, self.bootstrap, self.ious, bold=bold[key]) for key in keys),
                         *thresholds])
        table = _table(["Method", "Backbone", *(f"MaxBoxAcc@{d}" for d in self.ious), "MaxBoxAccV2",
                        *(f"τ*@{d}" for d in self.ious)], rows)
        return "\n".join([table, "", *notes]) if notes else table

    def _reference_runs(self) -> list[tuple[str, Runs, str]]:
        """(row name, runs, backbone; "" for the floor, the same on every backbone) of every reference row."""
        return [(FLOOR, self.floor, ""), *((name, runs, backbone) for name, rows in self.references.items()
                                           if name != FLOOR for backbone, runs in rows.items())]

    def _difference(self, a: Runs, b: Runs, key: str = "maxboxacc_v2") -> tuple[float, float, float]:
        """(a - b, 95 % low, high) of ``key`` by paired bootstrap, computed once per (a, b, key)."""
        if (a, b, key) not in self._differences:
            self._differences[a, b, key] = paired_difference(a.records(key), b.records(key), key, self.ious,
                                                             self.bootstrap["samples"], self.bootstrap["seed"])
        return self._differences[a, b, key]

    def _against_ours(self, backbone: str) -> list[tuple[str, Runs, str | None]]:
        """(name, runs, method; None for a reference row) of every run the paper's method is compared with."""
        return [*((NAMES[m], self.runs[backbone, m], m) for m in self.config.methods if m != PAPER_METHOD),
                *((name, per_backbone[backbone], None) for name, per_backbone in self.references.items())]

    def claim(self) -> str | None:
        """The paper's claim (its method localizes better than CAM and ADL) in one sentence from the paired
        differences; None without the paper's method or both of those."""
        if PAPER_METHOD not in self.config.methods:
            return None
        verdicts = [(name, BACKBONE_NAMES[b], _verdict(*self._difference(self.runs[b, PAPER_METHOD], other)[1:],
                                                      "ahead", "behind"))
                    for b in self.config.backbones for name, other, method in self._against_ours(b)
                    if method in ("cam", "adl")]
        if not verdicts:
            return None
        if all(v == "ahead" for _, _, v in verdicts):
            return ("This run supports the paper's claim: its method localizes better than "
                    + ", ".join(f"{m} ({b})" for m, b, _ in verdicts) + " beyond the test set's noise.")
        shortfalls = ", ".join(f"{m} ({b}): {v}" for m, b, v in verdicts if v != "ahead")
        return f"This run does not support the paper's claim that its method localizes better than CAM and ADL: {shortfalls}."

    def paired_section(self) -> list[str]:
        """The paper's method against each other method and the floor, and what that says of its claim."""
        config = self.config
        if PAPER_METHOD not in config.methods:
            return []
        rows = []
        for backbone in config.backbones:
            for name, other, _ in self._against_ours(backbone):
                difference, low, high = self._difference(self.runs[backbone, PAPER_METHOD], other)
                rows.append([NAMES[PAPER_METHOD], name, BACKBONE_NAMES[backbone], f"{difference:+.2f}",
                             f"[{low:+.2f}, {high:+.2f}]", _verdict(low, high, "ahead", "behind")])
        claim = self.claim()
        return ["## The paper's claim: paired differences in MaxBoxAccV2", "",
                f"{NAMES[PAPER_METHOD]} minus each other run, on the same test images (paired bootstrap, "
                f"{self.bootstrap['samples']} resamples; with several seeds, of the means over seeds). 'ahead' and "
                "'behind': the 95 % interval excludes 0.", "",
                _table(["Method", "Against", "Backbone", "Δ MaxBoxAccV2", "95 % interval", "Verdict"], rows), "",
                *([claim, ""] if claim else [])]

    def summary(self) -> list[str]:
        """The report in one paragraph: the best method of each backbone, the paper's claim in words,
        each method against the floor and the few-shot row, and the range of top-1 cls."""
        config, parts = self.config, []
        for backbone in config.backbones:
            column = self._column(backbone)
            best = max(column, key=lambda m: column[m].mean("maxboxacc_v2") or 0.0)
            rows = {name: per_backbone[backbone] for name, per_backbone in self.references.items()}
            above = [m for m in config.methods if self._difference(column[m], rows[FLOOR])[1] > 0]
            few_shot = rows[FEW_SHOT_ROW].mean("maxboxacc_v2")
            parts.append(f"On {BACKBONE_NAMES[backbone]} the best MaxBoxAccV2 is {NAMES[best]}'s "
                         f"{column[best].mean('maxboxacc_v2'):.2f}; {len(above)} of {len(config.methods)} methods are "
                         f"above the floor ({self.floor.mean('maxboxacc_v2'):.2f}) beyond the test set's noise"
                         + (f", none reaches the few-shot row ({few_shot:.2f})" if few_shot is not None and all(
                             (column[m].mean("maxboxacc_v2") or 0.0) < few_shot for m in config.methods) else "") + ".")
        claim = [line for line in [self.claim()] if line]
        accuracies = [v for runs in self.runs.values() for v in (runs.values("top1_cls") or [])]
        if accuracies:
            parts.append(f"Top-1 classification ranges from {min(accuracies):.2f} to {max(accuracies):.2f} % over the runs.")
        return ["## Summary", "", " ".join([*claim, *parts]), ""]

    def class_section(self, classes: dict[str, str]) -> list[str]:
        """Per class: each run's BoxAcc at IoU 50 at its τ*@50 (its share of MaxBoxAcc@50) and top-1 cls, mean
        over seeds, from the per-image records; then all images (MaxBoxAcc@50, top-1 cls). ``classes``: test
        image id -> class name, the rows in the order of first appearance."""
        scores = {key: _per_class(runs, classes) for key, runs in self.runs.items() if runs.box}
        if not scores:
            return []
        names = [NAMES[m] + (f" {BACKBONE_NAMES[b]}" if len(self.config.backbones) > 1 else "") for b, m in scores]
        counts = {name: list(classes.values()).count(name) for name in dict.fromkeys(classes.values())}
        rows = [[name, str(count), *("-" if np.isnan(per_class[name][k]) else f"{per_class[name][k]:.2f}"
                                     for k in (0, 1) for per_class in scores.values())]
                for name, count in [*counts.items(), ("All", len(classes))]]
        seeds = ", mean over seeds" if len(self.config.seeds) > 1 else ""
        return ["## Per class", "",
                f"BoxAcc at IoU {GT_KNOWN_IOU} at each run's τ*@{GT_KNOWN_IOU} (one τ for every class, so that the "
                f"All row is MaxBoxAcc@{GT_KNOWN_IOU}) and top-1 classification, on each class's test images, from the "
                f"per-image records{seeds}.", "",
                _table(["Class", "Images", *(f"BoxAcc@{GT_KNOWN_IOU} {n}" for n in names),
                        *(f"Top-1 cls {n}" for n in names)], rows), ""]

    def framing_section(self) -> list[str]:
        """Where each method sits between the floor, the pretrained features and the few-shot row:
        paired differences in MaxBoxAccV2 against each, and the share of the gap from the features
        to the few-shot row that the method closes."""
        rows, lines = [], []
        for backbone in self.config.backbones:
            rows_of = {name: per_backbone[backbone] for name, per_backbone in self.references.items()}
            features, few_shot = (rows_of[FEATURES_ROW].mean("maxboxacc_v2"), rows_of[FEW_SHOT_ROW].mean("maxboxacc_v2"))
            for method in self.config.methods:
                runs = self.runs[backbone, method]
                cells, words = [], []
                for name, reference in rows_of.items():
                    difference, low, high = self._difference(runs, reference)
                    cells.append(f"{difference:+.2f} [{low:+.2f}, {high:+.2f}]")
                    words.append(f"{_verdict(low, high, 'above', 'below', 'no difference resolved from')} the {_short(name)}")
                mean = runs.mean("maxboxacc_v2")
                gap = "-" if mean is None or features is None or few_shot is None or few_shot == features else \
                    f"{100 * (mean - features) / (few_shot - features):.0f} %"
                rows.append([NAMES[method], BACKBONE_NAMES[backbone], *cells, gap])
                lines.append(f"- {NAMES[method]} ({BACKBONE_NAMES[backbone]}): {', '.join(words)}.")
            for name in (FEATURES_ROW, FEW_SHOT_ROW):  # what the rows themselves are worth, against the floor
                difference, low, high = self._difference(rows_of[name], rows_of[FLOOR])
                lines.append(f"- The {_short(name)} ({BACKBONE_NAMES[backbone]}) minus the floor: {difference:+.2f} "
                             f"[{low:+.2f}, {high:+.2f}].")
        return ["## Between the floor, the pretrained features and the few-shot row", "",
                "Each method's MaxBoxAccV2 minus each reference row's on the same test images (paired bootstrap, 95 % "
                "interval): the floor is what a centred box gives; the pretrained features, the backbone's own "
                "class-agnostic map before any WSOL training (how much of the localization it brought); the few-shot "
                "row, the same backbone trained on train-fullsup's masks alone (what that much full supervision buys "
                "without any WSOL method). Gap closed: how far the method goes from the pretrained features to the "
                "few-shot row (0 % at the features, 100 % at the few-shot row).", "",
                _table(["Method", "Backbone", *(f"Δ {_short(n)}" for n in self.references), "Gap closed"], rows), "",
                *lines, ""]

    def regions_section(self) -> list[str]:
        """Where the CAMs go: mass and optimal-threshold box shares per region, against the prior."""
        first = self.floor.metrics[0].get("regions")
        if first is None:
            return []
        names = first["names"]
        rows = [["Pixels (prior)", "-", *(f"{100 * v:.1f}" for v in first["prior"]), *["-"] * len(names)]]
        named = [(NAMES[method], runs, backbone) for (backbone, method), runs in self.runs.items()]
        for name, runs, backbone in [*named, *self._reference_runs()]:
            regions = [m["regions"] for m in runs.metrics]
            rows.append([name, BACKBONE_NAMES.get(backbone, "-"),
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
        variants = [m for m in config.methods if METHODS[m].variant_of_icl is not None]
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
        rows = [[NAMES[m], BACKBONE_NAMES[b], *(f"{v:.2f}" for v in runs.values("maxboxacc_v2") or []),
                 f"{np.std(runs.values('maxboxacc_v2') or [], ddof=1):.2f}"] for (b, m), runs in self.runs.items()]
        return ["## Seeds", "", "MaxBoxAccV2 of each seed and their standard deviation.", "",
                _table(["Method", "Backbone", *(f"seed {s}" for s in self.config.seeds), "std"], rows), ""]

    def training_section(self) -> list[str]:
        """Did training hold, and did the attention learn anything: per run, the largest epoch loss as a
        multiple of the first epoch's, the last epoch's train top-1 (under the method's masks) and clipped
        steps; per tap of a method with an attention, its last epoch's figures (mean over seeds)."""
        rows, taps = [], []
        for (backbone, method), histories in self.histories.items():
            ratio = max(max(r["loss"] for r in h) / h[0]["loss"] for h in histories)
            clipped = [sum(r.get("grad/clipped_steps", 0) for r in h) for h in histories]
            rows.append([NAMES[method], BACKBONE_NAMES[backbone], f"{ratio:.2f}",
                         ", ".join(f"{h[-1]['train_top1_cls']:.1f}" for h in histories),
                         ", ".join(f"{h[-1]['val_top1_cls']:.1f}" for h in histories), ", ".join(f"{c:.0f}" for c in clipped)])
            per_seed = [_tap_figures(h) for h in histories]
            for tap in per_seed[0]:
                def mean(name: str, scale: float = 1.0, digits: int = 1, tap: str = tap, per_seed: list = per_seed) -> str:
                    values = [seed[tap].get(name) for seed in per_seed]
                    return "-" if None in values else f"{scale * np.mean(values):.{digits}f}"
                taps.append([NAMES[method], BACKBONE_NAMES[backbone], tap, mean("negative", 100),
                             mean("drop_empty", 100), mean("drop_area", 100), mean("variation", digits=2),
                             mean("val_auc_attention", digits=3), mean("val_auc_channel_mean", digits=3)])
        seeds = "; several seeds: each seed's value, comma-separated" if len(self.config.seeds) > 1 else ""
        lines = ["## Training", "",
                 f"Loss ratio: the largest epoch loss over the first epoch's (a run that diverges shows it); top-1 of "
                 f"the last epoch on train-weaksup (under the method's masks) and on train-fullsup; steps whose "
                 f"gradient the clip shortened, over the run{seeds} (`runs/{self.config.dataset}/<run>/history.csv`).", "",
                 _table(["Method", "Backbone", "Loss ratio", "Train top-1", "Val top-1", "Clipped steps"], rows), ""]
        if taps:
            lines += ["Each tap's attention at the last epoch (mean over seeds): share of pixels with A < 0, of images whose "
                      "dropping mask is empty (M_dfg; ADL's drop mask), the mask's area, A's spatial variation (std over "
                      "mean |A|), and on train-fullsup, with the plain network's features, the object AUC (cells inside "
                      "the boxes against the rest; 0.5 for a flat map) of A and of the channel mean of the same feature "
                      "(ADL's A is the channel mean).", "",
                      _table(["Method", "Backbone", "Tap", "A < 0 (%)", "Empty mask (%)", "Mask area (%)", "Variation",
                              "AUC of A", "AUC of channel mean"], taps), ""]
        return lines

    def cost_section(self) -> list[str]:
        """What training each run took (its cost.json), mean over seeds."""
        rows = [[NAMES[m], BACKBONE_NAMES[b], _duration(float(np.mean([c.wall_s for c in costs]))),
                 f"{np.mean([c.images_per_s for c in costs]):.1f}", _distinct(c.device for c in costs),
                 _distinct(c.workers for c in costs), _distinct(c.epochs for c in costs)]
                for (b, m), costs in self.costs.items() if m != FEW_SHOT_ROW]
        rows += [[FEW_SHOT_ROW, BACKBONE_NAMES[b], _duration(c.wall_s), f"{c.images_per_s:.1f}", c.device,
                  str(c.workers), str(c.epochs)] for (b, m), costs in self.costs.items() if m == FEW_SHOT_ROW for c in costs]
        seeds = ", mean over seeds" if len(self.config.seeds) > 1 else ""
        return ["## Cost", "",
                f"What training took (`runs/{self.config.dataset}/<run>/cost.json`{seeds}): wall time of every epoch's "
                "training and val scoring, over all attempts; training images per second over all workers.", "",
                _table(["Method", "Backbone", "Wall time", "Images/s", "Device", "Workers", "Epochs"], rows), ""]


def _per_class(runs: Runs, classes: dict[str, str]) -> dict[str, np.ndarray]:
    """Class name, then "All" -> (2,): BoxAcc (%) at IoU 50 at each seed's τ*@50 and top-1 cls (%; NaN without
    class predictions) over the class's images, mean over seeds. ``classes``: image id -> class name."""
    per_seed = []
    for metrics, records in zip(runs.metrics, runs.box, strict=True):
        tau = np.flatnonzero(np.isclose(records.thresholds, metrics["optimal_threshold"][str(GT_KNOWN_IOU)], atol=1e-9))[0]
        hits = records.hits()[:, records.deltas.index(GT_KNOWN_IOU), tau]
        classified = np.full(len(hits), np.nan) if records.classified is None else records.classified
        names = np.array([classes[i] for i in records.image_ids])
        groups = {name: names == name for name in dict.fromkeys(classes.values())} | {"All": np.ones(len(names), bool)}
        per_seed.append([(100 * hits[g].mean(), 100 * classified[g].mean()) for g in groups.values()])
    return dict(zip(groups, np.mean(per_seed, axis=0), strict=True))


def _verdict(low: float, high: float, above: str, below: str, unresolved: str = "no difference resolved") -> str:
    """A paired difference's 95 % interval in words: ``above`` (it excludes 0 from above), ``below``, or ``unresolved``."""
    return above if low > 0 else below if high < 0 else unresolved


def _short(row: str) -> str:
    """A reference row's name as the report's prose uses it: 'floor', 'pretrained features', 'few-shot row'."""
    return {FLOOR: "floor", FEATURES_ROW: "pretrained features", FEW_SHOT_ROW: "few-shot row"}.get(row, row)


def provenance(layout: Layout, costs: dict[Key, list[RunCost]]) -> str:
    """Which code made the report, when and on what: the git commit of the project (with "+ changes"
    where its code, dvc.yaml or params.yaml differ from it; outputs change in every run), the date
    (UTC), the CPU and its cores, and the devices the runs trained on (their cost.json)."""
    state = code_state(layout.root, (*CODE, "dvc.yaml", "params.yaml"))
    commit = "not a git checkout" if state is None else state.commit[:7] + (" + changes" if state.changed else "")
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    devices = ", ".join(sorted({cost.device for per_seed in costs.values() for cost in per_seed}))
    return (f"Made by commit {commit} on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; this machine: {cpu}, "
            f"{os.cpu_count()} cores; the runs trained on: {devices}.")


def weights_section(config: Config, layout: Layout) -> list[str]:
    """What each backbone knew before WSOL training (its pretrained/<backbone>/pretrain.json): for the
    pretrain stage's weights, its classes, images, held-out top-1 and what head colour alone gives."""
    rows = []
    for backbone in config.backbones:
        path = layout.pretrained(backbone) / "pretrain.json"
        summary = read_json(path, f"run dvc repro pretrain@{backbone}")
        if not isinstance(summary, dict):
            raise RecordError(f"{path}: not a JSON object")
        if summary.get("trained"):
            rows.append([BACKBONE_NAMES[backbone], "pretrain stage", str(summary["classes"]), str(summary["images"]),
                         f"{summary['held_out_top1_cls']:.2f}", f"{summary['colour_only_top1_cls']:.2f}"])
        else:
            rows.append([BACKBONE_NAMES[backbone], str(summary.get("source") or "random init"), "-", "-", "-", "-"])
    return ["## The backbones before WSOL training", "",
            "Where each backbone's weights come from. The pretrain stage (the synthetic stand-in for ImageNet weights) "
            "trains the plain classifier on generated body shapes, each with a random head colour and never a "
            "benchmark class: its held-out top-1 says it sees shapes; colour alone, the best a classifier of the head "
            "colour can do on the same held-out images.", "",
            _table(["Backbone", "Weights", "Classes", "Images", "Held-out top-1", "Colour alone"], rows), ""]


def read_searches(config: Config, layout: Layout) -> dict[tuple[str, str], SearchResult]:
    """Each backbone x method's search result (searches/<dataset>/, the search stage's)."""
    return {(b, m): read_search(layout.search(config.dataset, b, m), config.dataset, b, m)
            for b in config.backbones for m in config.methods}


def optimiser_section(config: Config, searches: dict[tuple[str, str], SearchResult]) -> list[str]:
    """Where each run's optimiser settings come from (:meth:`Config.optimiser`, with its search's
    choice applied): the backbone's ``backbone_settings``, a method's override with its source (a
    paper, a published script), or the protocol's search (its trials and best val score)."""
    rows = []
    for backbone in config.backbones:
        pretrained = config.backbone_settings.of(backbone).pretrained is not None
        for method in config.methods:
            searched = searches[backbone, method]
            optimiser = apply_search(config, searched, "the search result").optimiser(backbone, method)
            new = optimiser.lr * (config.train.lr_classifier_ratio if pretrained else 1.0)
            rows.append([BACKBONE_NAMES[backbone], NAMES[method], f"{optimiser.lr:.4g}", f"{new:.4g}",
                         f"{optimiser.weight_decay:g}", str(optimiser.lr_decay_epochs), optimiser.source])
    return ["## Optimiser settings", "",
            f"SGD (momentum {config.train.momentum:g}, Nesterov {'on' if config.train.nesterov else 'off'}), lr × "
            f"{config.train.lr_decay_factor:g} every 'Decay every' epochs; the new layers at lr × "
            f"{config.train.lr_classifier_ratio:g} on a pretrained backbone. Source: `backbone_settings.<backbone>` "
            "(params.yaml), the method's override (`method_settings.<method>.optimiser.<backbone>`) and where its "
            "values come from, or the protocol's search on train-fullsup (`method_settings.<method>.search`: "
            "its trials and the best trial's val score).", "",
            _table(["Backbone", "Method", "lr", "New layers' lr", "Weight decay", "Decay every", "Source"], rows), ""]


def _rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as column -> text."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _curves(config: Config, layout: Layout, backbone: str, path: Path) -> Path:
    """BoxAcc against tau on test (the evaluate stage's boxacc.csv), one panel per IoU of the config,
    one line per method (first seed) and the floor."""
    references = {name: folders[backbone] for name, folders in reference_folders(config, layout).items()}
    folders = {**{NAMES[m]: layout.results(config.dataset, backbone, m, config.seeds[0]) for m in config.methods},
               **references}
    tables = {name: _rows(folder / "boxacc.csv") for name, folder in folders.items()}

    colours = colours_by_name()

    def curves(delta: int) -> list:
        return [(name, [float(r["threshold"]) for r in rows], [float(r[f"iou_{delta}"]) for r in rows],
                 ":" if name in references else "-", colours[name]) for name, rows in tables.items()]

    panels = [(f"IoU ≥ {d / 100:g}", curves(d)) for d in config.evaluate.iou_thresholds]
    return curve_panels(panels, path, ylabel="BoxAcc (%)",
                        title=f"{config.dataset} test, {BACKBONE_NAMES[backbone]}, seed {config.seeds[0]}")


def _training_curves(config: Config, histories: dict[Key, list[History]], path: Path) -> Path:
    """Val MaxBoxAccV2 and val top-1 cls (%) against the epoch (history.csv), one panel each, a line per run:
    its method's colour, its backbone's line style, its seeds alike."""
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2)
    styles = ("-", "--", ":", "-.")
    for axes, (key, title) in zip(panels, (("val_maxboxacc_v2", "val MaxBoxAccV2"), ("val_top1_cls", "val top-1 cls")),
                                  strict=True):
        for (backbone, method), runs in histories.items():
            label = NAMES[method] + (f" {BACKBONE_NAMES[backbone]}" if len(config.backbones) > 1 else "")
            for seed, history in enumerate(runs):
                axes.plot([r["epoch"] for r in history], [r.get(key, np.nan) for r in history], marker=".",
                          linestyle=styles[config.backbones.index(backbone) % len(styles)], color=method_colour(method),
                          label=label if seed == 0 else None)
        axes.set(xlabel="epoch", ylabel=f"{title} (%)", title=title)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(f"{config.dataset} train-fullsup (val) during training")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _gallery_section(config: Config, backbone: str, counts: dict[str, dict[str, int]]) -> list[str]:
    """The CAM gallery's caption (its outcomes defined), its picture, and how many of the images it picked
    from fall in each outcome (``counts``: method -> outcome -> images)."""
    pool = sum(next(iter(counts.values())).values())
    return [f"CAMs on test images, a row per method (seed {config.seeds[0]}), a column per outcome "
            f"({', '.join(OUTCOMES[:config.report.gallery_images])}), each picked among {pool} test images spread "
            "evenly over the split. **Red: the ground-truth box; green: the predicted box** (of the largest region "
            "above the run's val-optimal threshold). best: the highest IoU; median: the median IoU; then, among the "
            f"failures (IoU < {SUCCESS_IOU:g}), the median one of each mode, by the predicted box's area over the GT "
            f"box's: too large (at least {SIZE_FACTOR:g}×: it takes in context), too small (at most 1/{SIZE_FACTOR:g}: "
            "on a part, or no box), misplaced (in between: about the right size in the wrong place). On each tile its "
            "class and IoU, below it its image id.", "",
            f"![CAM gallery, {BACKBONE_NAMES[backbone]}](gallery_{backbone}.png)", "",
            f"How many of those {pool} images fall in each outcome:", "",
            _table(["Method", *next(iter(counts.values()))], [[NAMES[m], *map(str, c.values())] for m, c in counts.items()]),
            ""]


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_plot_data(config: Config, layout: Layout, folder: Path) -> None:
    """The long-format CSVs that dvc.yaml's plots overlay, into ``folder``: a row per run (every backbone
    x method x seed, named 'ResNet18 CAM seed 0'; for the test curves the reference rows too, the floor
    once, the others per backbone, 'ResNet18 Pretrained features'), its method or row (the templates'
    colour: pipeline/report/colours.py) and point, and the charts' templates. Values are copied as the
    stages wrote them (see the module docstring for the columns)."""
    runs = {(f"{BACKBONE_NAMES[b]} {NAMES[m]} seed {s}", NAMES[m]): (layout.run(config.dataset, b, m, s),
                                                                    layout.results(config.dataset, b, m, s))
            for b in config.backbones for m in config.methods for s in config.seeds}
    scored = {name: results for name, (_, results) in runs.items()}
    for row, folders in reference_folders(config, layout).items():
        scored.update({(FLOOR, FLOOR): layout.baseline(config.dataset)} if row == FLOOR else
                      {(f"{BACKBONE_NAMES[b]} {row}", row): folder for b, folder in folders.items()})
    history, boxacc, pr_curve = [], [], []
    for (name, method), (run, _) in runs.items():
        history += [[name, method, r["epoch"], r["val_maxboxacc_v2"]] for r in _rows(run / "history.csv")]
    for (name, method), results in scored.items():
        rows = _rows(results / "boxacc.csv")
        boxacc += [[name, method, d, r["threshold"], r[f"iou_{d}"]] for d in config.evaluate.iou_thresholds for r in rows]
        pr_curve += [[name, method, r["recall"], r["precision"]] for r in _rows(results / "pr_curve.csv")]
    _write_csv(folder / "val_maxboxacc_v2.csv", ["run", "method", "epoch", "val_maxboxacc_v2"], history)
    _write_csv(folder / "boxacc.csv", ["run", "method", "iou", "threshold", "boxacc"], boxacc)
    _write_csv(folder / "pr_curve.csv", ["run", "method", "recall", "precision"], pr_curve)
    write_templates(folder, {**{NAMES[m]: method_colour(m) for m in config.methods}, **ROW_COLOURS})


def build_report(config: Config, layout: Layout) -> tuple[Path, Report]:
    """report/<dataset>/ (module docstring) from the stages' outputs: report.md's path, and the Report it
    was made from (:func:`terminal_summary`)."""
    runs, references, costs, histories = _load(config, layout)
    report = Report(config, runs, references, costs, histories)
    info = DatasetInfo.load(layout.split(config.dataset))
    test = info.metadata("test")
    out = layout.report(config.dataset)
    regions = report.floor.metrics[0].get("regions", {}).get("names", [])
    first = report.floor.metrics[0]
    seeds = f"{len(config.seeds)} seeds ({', '.join(map(str, config.seeds))}), mean ± std" \
        if len(config.seeds) > 1 else f"one seed ({config.seeds[0]})"
    mean = "; Mean: the mean over backbones" if len(config.backbones) > 1 else ""
    parts = [
        f"# WSOL benchmark: {config.dataset}",
        "",
        f"Test split: {first['images']} images, {info.num_classes} classes; {seeds}. Protocol of *Evaluating WSOL "
        "Methods Right* (Choe et al., CVPR 2020): CAMs of the ground-truth class at 224×224, every threshold τ in "
        f"steps of {first['cam_curve_interval']}, boxes from every contour; hyperparameters and the exported model "
        "chosen on train-fullsup only. Accuracies in %, the best method's mean of each column (of each backbone) in "
        f"bold{mean}, only where it is above both the floor and the pretrained features; in brackets the 95 % "
        f"bootstrap interval over test images ({report.bootstrap['samples']} resamples: the variation of the "
        "test images, not of training; the ± over seeds is training's). Three rows frame every method, each a "
        "score map scored by the same evaluator: the floor, the protocol's trivial baseline (one centred Gaussian for every image); the pretrained features (the "
        "backbone's channel-mean map before any WSOL training); and the few-shot row (the same backbone and "
        "weights with a foreground head trained on train-fullsup's masks only, Choe et al., TPAMI 2022).",
        "",
        provenance(layout, costs),
        "",
        *report.summary(),
        "## The test images",
        "",
        f"The first {EXAMPLES_PER_CLASS} test images of each class" + (", their ground-truth boxes red" if test.boxes
                                                                        else "")
        + ("; beside each, its region map: part (the discriminative head), body (the rest of the object), context "
           "(background carrying the class's own texture), background (the rest)." if info.region_root else "."),
        "",
        "![Test images of each class](dataset.png)",
        "",
        *weights_section(config, layout),
        *optimiser_section(config, read_searches(config, layout)),
        "## MaxBoxAccV2 (Table 4 layout)",
        "",
        "Mean of MaxBoxAcc over IoU 30, 50 and 70.",
        "",
        report.metric_table("maxboxacc_v2"),
        "",
        *report.framing_section(),
        *report.paired_section(),
        "## MaxBoxAcc at each IoU (Table 5 layout)",
        "",
        "τ* is the threshold at which each MaxBoxAcc is reached (mean over seeds); – where no threshold gives a "
        f"correct box; † where the curve is flat there: BoxAcc stays within {FLAT_MARGIN:g} point of its max over a "
        f"span of τ at least {FLAT_WIDTH:g} wide around τ* (of the mean curve over seeds), so that any τ in it does "
        "about as well and τ* says little about where to cut.",
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
        *report.class_section({i: info.class_names[test.class_labels[i]] for i in test.image_ids}),
    ]
    if report.floor.values("pxap") is not None:
        parts += ["## PxAP", "", "Pixel average precision of the CAMs against the object masks.", "",
                  report.metric_table("pxap"), ""]
    parts += [*report.regions_section(), *report.ablation_section(), *report.seeds_section(),
              *report.training_section(), "Validation scores after each epoch, a line per run:", "",
              "![Val MaxBoxAccV2 and val top-1 cls per epoch](training.png)", "", *report.cost_section()]
    with replaced_atomically(out, force=True) as staging:  # the stage's own folder
        dataset_examples(info, regions, EXAMPLES_PER_CLASS, staging / "dataset.png")
        _training_curves(config, histories, staging / "training.png")
        for backbone in config.backbones:
            name = BACKBONE_NAMES[backbone]
            parts += [f"## {name}", ""]
            _curves(config, layout, backbone, staging / f"boxacc_{backbone}.png")
            parts += [f"![BoxAcc against the CAM threshold at each IoU, {name}](boxacc_{backbone}.png)", ""]
            if test.boxes is None:
                parts += ["No CAM gallery: the test split has no GT boxes to score a box against.", ""]
                continue
            counts = outcome_gallery(config, layout, info, backbone, staging / f"gallery_{backbone}.png")
            parts += _gallery_section(config, backbone, counts)
        write_plot_data(config, layout, staging / "plots")
        (staging / "report.md").write_text("\n".join(parts))
    return out / "report.md", report


def terminal_summary(report: Report, report_md: Path, layout: Layout, mlflow: str) -> str:
    """What the report stage prints last, so that a long ``dvc repro`` ends by saying where its results
    are: the report's MaxBoxAccV2 table and its summary paragraph, then the report, ``mlflow`` (where
    the MLflow view is) and the DVC commands that show the rest."""
    table = report.metric_table("maxboxacc_v2").splitlines()
    verdict = report.summary()[2:3]
    return "\n".join(["", "MaxBoxAccV2 on test (%, 95 % interval over test images):", *table, *verdict, "",
                      f"Report: {report_md.relative_to(layout.root)}", mlflow,
                      "The headline of every run and row: dvc metrics show; the curves: dvc plots show", ""])
