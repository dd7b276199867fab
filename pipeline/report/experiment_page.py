"""The headline on the MLflow experiment page: what a user sees first in ``mlflow ui``.

The report stage writes two tags onto the dataset's experiment (``wsol-<dataset>``), both read by the
MLflow 3.17 UI (found in its JS bundle, mlflow/server/js/build):

- ``mlflow.note.content``: the experiment's description, Markdown shown above the runs table (collapsed
  to its first line): one line naming the best run and the floor, then a line per run and reference
  row with MaxBoxAccV2 and its 95 % interval, top-1 loc and top-1 cls, from their scores.json.
- ``mlflow.sharedViewState.headline``: a saved view ("Views" menu; :func:`view_url`) of the report's
  runs only, whose table shows those metrics as columns, best first. A fresh browser's table shows no metric column otherwise: the
  columns a user picks live in that browser's storage.

MLflow 3.17 opens an experiment on its GenAI overview unless the URL (or the browser's last choice)
says ``workflowType=machine_learning``; the experiment tag ``mlflow.experimentKind`` no longer decides.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, store_failure_warns
from pipeline.evaluation.evaluate import SCORES
from pipeline.formats.records import RecordError, read_json
from pipeline.report.report import BACKBONE_NAMES, FLOOR, NAMES, reference_folders
from pipeline.settings.config import Config

VIEW = "headline"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW}"
NOTE_TAG = "mlflow.note.content"
COLUMNS = ("test_maxboxacc_v2", "test_maxboxacc_v2_ci_low", "test_maxboxacc_v2_ci_high", "test_top1_loc",
           "test_top1_cls")


def view_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The runs table of the experiment in the saved headline view, in MLflow's training (not GenAI) UI."""
    return f"{host}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW}&workflowType=machine_learning"


def where(experiment_id: str | None) -> str:
    """The terminal's pointer to the experiment page: the store from ``$MLFLOW_TRACKING_URI`` (a
    server) or the command serving the project's own, and the headline view's address."""
    store = os.environ.get("MLFLOW_TRACKING_URI")
    if experiment_id is None:
        return f"MLflow: {store or 'no experiment in sqlite:///mlflow.db'} (the headline was not written)"
    if store and store.startswith("http"):
        return f"MLflow: {view_url(experiment_id, store.rstrip('/'))}"
    return ("MLflow: mlflow ui --backend-store-uri sqlite:///mlflow.db (from the project root), then "
            f"{view_url(experiment_id)}")


def scored_rows(config: Config, layout: Layout) -> list[tuple[str, dict]]:
    """(row name, its scores.json) for every run of params.yaml and every reference row, in the
    report's order: runs by backbone, method, seed; then the floor (once) and the other rows."""
    rows = [(f"{BACKBONE_NAMES[b]} {NAMES[m]} seed {s}", layout.results(config.dataset, b, m, s))
            for b in config.backbones for m in config.methods for s in config.seeds]
    for name, folders in reference_folders(config, layout).items():
        rows += [(name, folders[config.backbones[0]])] if name == FLOOR else \
            [(f"{BACKBONE_NAMES[b]} {name}", folder) for b, folder in folders.items()]
    return [(name, _scores(folder / SCORES)) for name, folder in rows]


def _scores(path: Path) -> dict:
    """A scores.json (pipeline/evaluation/evaluate.py), checked to hold the headline score."""
    scores = read_json(path, "run the stages that score it (dvc repro)")
    if not isinstance(scores, dict) or not isinstance(scores.get("maxboxacc_v2"), (int, float)):
        raise RecordError(f"{path}: not a scores file (no number 'maxboxacc_v2')")
    return scores


def _cell(scores: dict, key: str) -> str:
    return "–" if scores.get(key) is None else f"{scores[key]:.2f}"


def description(config: Config, rows: list[tuple[str, dict]], report: Path) -> str:
    """The experiment's Markdown description: a first line (all the collapsed view shows), then a line
    per run and row (a list: the UI draws Markdown tables without borders or padding)."""
    runs = len(config.backbones) * len(config.methods) * len(config.seeds)
    best, scores = max(rows[:runs], key=lambda row: row[1]["maxboxacc_v2"])
    floor = dict(rows)[FLOOR]["maxboxacc_v2"]
    lines = [f"**Test MaxBoxAccV2 (%)**: best run {best} {scores['maxboxacc_v2']:.2f}, floor {floor:.2f} "
             f"(expand for every run; full report: `{report}`).", ""]
    for name, scores in rows:
        interval = f" [{scores['maxboxacc_v2_ci_low']:.1f}, {scores['maxboxacc_v2_ci_high']:.1f}]" \
            if "maxboxacc_v2_ci_low" in scores else ""
        classified = "".join(f", {label} {scores[key]:.2f}" for key, label in (("top1_loc", "top-1 loc"),
                                                                             ("top1_cls", "top-1 cls")) if key in scores)
        lines.append(f"- {name}: **{scores['maxboxacc_v2']:.2f}**{interval}{classified}")
    return "\n".join(lines)


def current_runs(client: MlflowClient, experiment_id: str, config: Config, layout: Layout) -> list[str]:
    """The ids of the runs the report shows: each training run's (its run folder's model.json) and,
    per reference row and backbone, the newest run of that name (its stage made a new one each time).
    Older runs of the same names stay in the store: a rerun never deletes one."""
    ids = [run_id for b in config.backbones for m in config.methods for s in config.seeds
           if (run_id := _mlflow_run_id(layout.run(config.dataset, b, m, s) / "model.json")) is not None]
    newest: dict[str, str] = {}
    for run in client.search_runs([experiment_id], "tags.row != ''", order_by=["attributes.start_time DESC"],
                                  max_results=1000):
        newest.setdefault(run.info.run_name, run.info.run_id)
    return ids + list(newest.values())


def _mlflow_run_id(path: Path) -> str | None:
    """A run folder's MLflow run id (its model.json's ``mlflow_run_id``; None for an imported checkpoint),
    read as JSON: the report reads no model code (pipeline/formats/run_folder.py would import it)."""
    meta = read_json(path, "run the train stage")
    run_id = meta.get("mlflow_run_id") if isinstance(meta, dict) else None
    if run_id is not None and not isinstance(run_id, str):
        raise RecordError(f"{path}: mlflow_run_id is {run_id!r}, not a run id")
    return run_id


def saved_view(run_ids: list[str]) -> str:
    """The headline view, as the UI stores one: an envelope whose ``state`` is the view's JSON text; it
    shows ``run_ids`` only (the report's runs, not the older runs of the same names)."""
    now = int(time.time() * 1000)
    columns = [f"metrics.`{c}`" for c in COLUMNS]
    state = {"searchFilter": "attributes.run_id IN ({})".format(", ".join(f"'{i}'" for i in run_ids)),
             "orderByKey": "metrics.`test_maxboxacc_v2`", "orderByAsc": False,
             "selectedColumns": columns, "columnOrder": columns,  # widths apply to ordered columns only
             "columnWidths": {f"metrics.`{c}`": 170 for c in COLUMNS}}
    return json.dumps({"name": "Headline results (test)", "createdAt": now, "updatedAt": now,
                       "state": json.dumps(state)})


def publish(config: Config, layout: Layout, report: Path) -> str | None:
    """Write the description and the saved view onto ``wsol-<dataset>``; the experiment's id, or None
    (with a warning) where the store lacks it or fails: the report is the record."""
    text = description(config, scored_rows(config, layout), report.relative_to(layout.root))
    with store_failure_warns(layout, f"the headline of MLflow experiment wsol-{config.dataset}"):
        client = client_for(layout)
        experiment = client.get_experiment_by_name(f"wsol-{config.dataset}")
        if experiment is None:
            return None
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, text)
        runs = current_runs(client, experiment.experiment_id, config, layout)
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, saved_view(runs))
        return experiment.experiment_id
    return None
