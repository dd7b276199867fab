"""One colour per method and per reference row, the same everywhere a user compares them: the
report's figures, MLflow (each run's ``mlflow.runColor`` tag, set when the run is created) and
``dvc plots`` (the templates in .dvc/plots/, written from this module: ``python -m
pipeline.report.colours``; tests/test_report.py checks that they are current).

A method's colour is the palette entry at its place in the registry, so a method added at the end
of the registry takes a new colour and every existing method keeps its own. The paper's method is red.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.dag.paths import FEATURES_ROW, FEW_SHOT_ROW, FLOOR_ROW
from pipeline.settings.registry import METHODS

# In registry order: CAM, HaS, ACoL, SPG, ADL, CutMix, ICL (red), then the ICL variants of Table 2
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#e377c2", "#9467bd", "#8c564b", "#d62728",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
           "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
ROW_COLOURS = {FLOOR_ROW: "#000000", FEATURES_ROW: "#7f7f7f", FEW_SHOT_ROW: "#b8860b"}
RUN_COLOUR_TAG = "mlflow.runColor"  # the MLflow UI's run colour, kept with the run
TEMPLATES = Path(".dvc") / "plots"  # from the project root


def method_colour(method: str) -> str:
    """A registered method's colour (hex RGB)."""
    return PALETTE[list(METHODS).index(method) % len(PALETTE)]


def row_colour(row: str) -> str:
    """A reference row's colour by its MLflow tag ``row`` ("features", "few-shot") or display name."""
    return ROW_COLOURS[{"features": FEATURES_ROW, "few-shot": FEW_SHOT_ROW}.get(row, row)]


def colours_by_name() -> dict[str, str]:
    """Display name -> colour of every registered method and reference row: the legend entries of
    the report's figures and of ``dvc plots``."""
    return {**{entry.display: method_colour(name) for name, entry in METHODS.items()}, **ROW_COLOURS}


def _template(title: str, *, per_iou: bool = False, points: bool = False, integer_x: bool = False) -> dict:
    """A Vega-Lite template for ``dvc plots``: a line per run, coloured by its method (a fixed scale)."""
    names = colours_by_name()
    x: dict = {"field": "<DVC_METRIC_X>", "type": "quantitative", "title": "<DVC_METRIC_X_LABEL>"}
    if integer_x:
        x["axis"] = {"tickMinStep": 1, "format": "d"}
    encoding = {
        "x": x,
        "y": {"field": "<DVC_METRIC_Y>", "type": "quantitative", "title": "<DVC_METRIC_Y_LABEL>", "scale": {"zero": False}},
        "color": {"field": "method", "type": "nominal", "title": "method",
                  "scale": {"domain": list(names), "range": list(names.values())}},
        "detail": {"field": "run", "type": "nominal"},
        "tooltip": [{"field": "run", "type": "nominal"}, {"field": "<DVC_METRIC_X>", "type": "quantitative"},
                    {"field": "<DVC_METRIC_Y>", "type": "quantitative"}],
    }
    if per_iou:
        encoding = {"column": {"field": "iou", "type": "ordinal", "title": "IoU threshold (%)"}, **encoding}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "data": {"values": "<DVC_METRIC_DATA>"},
            "title": "<DVC_METRIC_TITLE>", "width": 300 if per_iou else 420, "height": 260 if per_iou else 300,
            "mark": {"type": "line", "point": points}, "encoding": encoding, "description": title}


def plot_templates() -> dict[str, dict]:
    """dvc.yaml's templates by name: per epoch (integer ticks, points), per IoU (test BoxAcc), and
    curves without points (the pixel precision-recall)."""
    return {"by_epoch": _template("val MaxBoxAccV2 per epoch", points=True, integer_x=True),
            "by_run_per_iou": _template("test BoxAcc against tau, one panel per IoU", per_iou=True),
            "by_run": _template("a curve per run")}


def write_templates(root: Path) -> None:
    for name, template in plot_templates().items():
        (root / TEMPLATES / f"{name}.json").write_text(json.dumps(template, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_templates(Path.cwd())
