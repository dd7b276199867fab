"""The headline on the MLflow experiment page: a description table from every run's scores.json and a
saved view with the headline columns, written into a real MLflow store."""

import json
import time

import pytest

from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, experiment_id
from pipeline.formats.records import RecordError
from pipeline.formats.run_folder import RunMeta, save_run
from pipeline.report.experiment_page import NOTE_TAG, VIEW_TAG, publish, view_url
from pipeline.settings import yaml_io
from pipeline.settings.config import load_config
from tests.helpers import params


def _scores(folder, v2, low=None, high=None, loc=None, cls=None):
    folder.mkdir(parents=True, exist_ok=True)
    scores = {"maxboxacc_v2": v2, **({} if low is None else {"maxboxacc_v2_ci_low": low, "maxboxacc_v2_ci_high": high}),
              **({} if loc is None else {"top1_loc": loc, "top1_cls": cls})}
    (folder / "scores.json").write_text(json.dumps(scores))


@pytest.fixture
def scored(tmp_path):
    """A project of two methods whose runs and reference rows have scores.json files written by hand."""
    layout = Layout(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml_io.dump(params(methods=["icl", "cam"])))
    config = load_config(tmp_path / "params.yaml")
    _scores(layout.results("synth", "resnet18", "icl", 0), 24.75, 23.08, 27.08, 10.0, 97.0)
    _scores(layout.results("synth", "resnet18", "cam", 0), 22.917, 21.0, 25.0, 8.5, 99.25)
    _scores(layout.baseline("synth"), 15.58, 14.0, 17.2)
    _scores(layout.features("synth", "resnet18"), 12.33, 11.0, 13.5)
    _scores(layout.few_shot("synth", "resnet18"), 51.25, 48.6, 54.9)
    return layout, config


def test_the_description_lists_every_run_and_row_and_the_view_shows_the_headline_columns(scored):
    layout, config = scored
    client = client_for(layout)
    experiment = experiment_id(client, "synth", layout)
    trained = {}
    for method in ("icl", "cam"):
        client.create_run(experiment, run_name=f"synth-resnet18-{method}-seed0")  # superseded: an older run of it
        trained[method] = client.create_run(experiment, run_name=f"synth-resnet18-{method}-seed0").info.run_id
        save_run(layout.run("synth", "resnet18", method, 0), {}, RunMeta(
            dataset="synth", backbone="resnet18", method=method, num_classes=4, class_names=list("abcd"),
            cam_threshold=0.5, settings=config.run("resnet18", method).as_json(), mlflow_run_id=trained[method]))
    rows = {}
    for name in ("features-resnet18", "few-shot-resnet18"):
        for _ in range(2):  # each stage run makes a new run: the newest is the report's
            rows[name] = client.create_run(experiment, run_name=name, tags={"row": name.split("-resnet")[0]}).info.run_id
            time.sleep(0.01)  # distinct start times
    report = layout.report("synth") / "report.md"
    assert publish(config, layout, report) == experiment
    tags = client.get_experiment(experiment).tags
    lines = tags[NOTE_TAG].splitlines()
    assert lines[0] == ("**Test MaxBoxAccV2 (%)**: best run ResNet18 Ours (ICL) seed 0 24.75, floor 15.58 (expand for every "
                        "run; full report: `report/synth/report.md`).")
    assert lines[1:] == ["", "- ResNet18 Ours (ICL) seed 0: **24.75** [23.1, 27.1], top-1 loc 10.00, top-1 cls 97.00",
                         "- ResNet18 CAM seed 0: **22.92** [21.0, 25.0], top-1 loc 8.50, top-1 cls 99.25",
                         "- Center Gaussian (floor): **15.58** [14.0, 17.2]",
                         "- ResNet18 Pretrained features: **12.33** [11.0, 13.5]",
                         "- ResNet18 Few-shot (train-fullsup masks): **51.25** [48.6, 54.9]"]
    view = json.loads(tags[VIEW_TAG])
    state = json.loads(view["state"])  # the UI keeps the view's state as JSON text inside the envelope
    assert state["orderByKey"] == "metrics.`test_maxboxacc_v2`" and state["orderByAsc"] is False
    assert "metrics.`test_top1_cls`" in state["selectedColumns"] and view["createdAt"] == view["updatedAt"]
    shown = [trained["icl"], trained["cam"], rows["few-shot-resnet18"], rows["features-resnet18"]]
    assert state["searchFilter"] == "attributes.run_id IN ({})".format(", ".join(f"'{i}'" for i in shown))
    assert len(client.search_runs([experiment], state["searchFilter"])) == 4  # MLflow's own search accepts it
    assert state["columnOrder"] == state["selectedColumns"] and state["columnWidths"]["metrics.`test_maxboxacc_v2`"] > 100
    assert view_url(experiment).endswith(f"/#/experiments/{experiment}/runs?viewStateShareKey=headline"
                                         "&workflowType=machine_learning")


def test_no_experiment_yet_is_no_headline_and_a_bad_scores_file_is_named(scored):
    layout, config = scored
    assert publish(config, layout, layout.report("synth") / "report.md") is None  # nothing trained into this store
    (layout.baseline("synth") / "scores.json").write_text('{"top1_cls": 3}')
    with pytest.raises(RecordError, match="center-gaussian/scores.json: not a scores file"):
        publish(config, layout, layout.report("synth") / "report.md")
