"""One colour per method and per reference row, the same everywhere a user compares them: the
report's figures, MLflow (each run's ``mlflow.runColor`` tag, set when the run is created) and
``dvc plots`` (the templates the report stage writes, pipeline/report/plot_templates.py).

A method's colour is the palette entry at its place in the registry, so a method added at the end
of the registry takes a new colour and every existing method keeps its own. The paper's method is red.
"""

from __future__ import annotations

from pipeline.dag.paths import FEATURES_ROW, FEW_SHOT_ROW, FLOOR_ROW
from pipeline.settings.registry import METHODS

# In registry order: CAM, HaS, ACoL, SPG, ADL, CutMix, ICL (red), then the ICL variants of Table 2
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#e377c2", "#9467bd", "#8c564b", "#d62728",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
           "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
ROW_COLOURS = {FLOOR_ROW: "#000000", FEATURES_ROW: "#7f7f7f", FEW_SHOT_ROW: "#b8860b"}
RUN_COLOUR_TAG = "mlflow.runColor"  # the MLflow UI's run colour, kept with the run


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
