"""The Vega-Lite templates of dvc.yaml's plots, written by the report stage beside the plots' data
(report/<dataset>/plots/<name>.json): a line per run, coloured by its method or row with the colours of
pipeline/report/colours.py. The colour scale lists the methods of params.yaml and the reference rows
only, so each chart's legend names what it shows, and a method keeps its colour in every chart."""

from __future__ import annotations

import json
from pathlib import Path


def _template(title: str, names: dict[str, str], *, per_iou: bool = False, points: bool = False,
              integer_x: bool = False) -> dict:
    x: dict = {"field": "<DVC_METRIC_X>", "type": "quantitative", "title": "<DVC_METRIC_X_LABEL>"}
    if integer_x:
        x["axis"] = {"tickMinStep": 1, "format": "d"}
    encoding = {
        "x": x,
        "y": {"field": "<DVC_METRIC_Y>", "type": "quantitative", "title": "<DVC_METRIC_Y_LABEL>", "scale": {"zero": False}},
        "color": {"field": "method", "type": "nominal", "title": "method", "legend": {"labelLimit": 400},
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


def plot_templates(names: dict[str, str]) -> dict[str, dict]:
    """dvc.yaml's templates by name for legend entries ``names`` (display name -> hex colour): per
    epoch (integer ticks, points), per IoU (test BoxAcc), and curves without points (pixel PR)."""
    return {"by_epoch": _template("val MaxBoxAccV2 per epoch", names, points=True, integer_x=True),
            "by_run_per_iou": _template("test BoxAcc against tau, one panel per IoU", names, per_iou=True),
            "by_run": _template("a curve per run", names)}


def write_templates(folder: Path, names: dict[str, str]) -> None:
    for name, template in plot_templates(names).items():
        (folder / f"{name}.json").write_text(json.dumps(template, indent=2, ensure_ascii=False) + "\n")
