"""MLflow as users see it: system tags naming who ran which code, a store that survives moving the
project, and the exported network served from the model registry (a real SQLite store)."""

import os
import shutil
import subprocess

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from pipeline.dag.paths import Layout
from pipeline.dag.tracking import CodeState, client_for, code_state, experiment_id, in_project, open_run, source_tags
from pipeline.export.served_model import fluent_store, log_served_model
from pipeline.formats.export_folder import load_exported


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_source_tags_name_the_commit_and_only_a_code_change_makes_it_dirty(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    (repo / "pipeline/model.py").write_text("x = 1\n")
    (repo / "metrics.json").write_text("{}\n")  # an output DVC keeps in git
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "code")
    tags = source_tags(repo)
    assert tags["mlflow.source.git.commit"] == _git(repo, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.dirty"] == "false" and tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    (repo / "metrics.json").write_text('{"a": 1}\n')
    assert source_tags(repo)["mlflow.source.git.dirty"] == "false"  # outputs changed, not the code
    (repo / "pipeline/new_module.py").write_text("y = 1\n")  # new code, not yet added to git
    assert source_tags(repo)["mlflow.source.git.dirty"] == "true"
    (repo / "pipeline/new_module.py").unlink()
    (repo / "pipeline/model.py").write_text("x = 2\n")
    assert source_tags(repo)["mlflow.source.git.dirty"] == "true"
    assert code_state(repo, ("metrics.json",)) == CodeState(tags["mlflow.source.git.commit"], _git(repo, "branch", "--show-current"), True)
    outside = tmp_path / "outside"
    outside.mkdir()
    assert "mlflow.source.git.commit" not in source_tags(outside)  # not a checkout: no commit claimed


def test_a_moved_project_reads_its_own_artifacts(tmp_path):
    layout = Layout(tmp_path / "first")
    layout.root.mkdir()
    client = client_for(layout)
    experiment = experiment_id(client, "synth", layout)
    assert client.get_experiment(experiment).artifact_location == "mlartifacts/wsol-synth"
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    run = open_run(client, experiment, "r", "key", {}, {}, layout.root)
    (layout.root / "note.txt").write_text("first\n")
    with in_project(layout):
        client.log_artifact(run, str(layout.root / "note.txt"))
    assert (layout.root / "mlartifacts/wsol-synth" / run / "artifacts/note.txt").is_file()
    moved = Layout(tmp_path / "moved")
    shutil.move(layout.root, moved.root)
    with in_project(moved):
        fetched = client_for(moved).download_artifacts(run, "note.txt", str(moved.root))
    assert open(fetched).read() == "first\n"


def test_the_registered_model_serves_what_the_exported_network_computes(saved_project):
    layout, cfg, info = saved_project
    before = os.environ.get("MLFLOW_TRACKING_URI")
    folder = layout.export("synth", "resnet50", "icl", 0)
    network, meta = load_exported(folder)
    assert log_served_model(folder, meta, 0, layout) == 1
    client = MlflowClient(f"sqlite:///{layout.mlflow_db}")
    version = client.get_model_version("wsol-synth-resnet50-icl", "1")
    assert version.run_id == meta.mlflow_run_id and version.tags["seed"] == "0"
    with fluent_store(layout):
        served = mlflow.pyfunc.load_model("models:/wsol-synth-resnet50-icl/1")
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # later clients of this process use their own store
    signature = served.metadata.signature
    assert signature.inputs.input_names() == ["images", "classes"] and signature.outputs.input_names() == ["logits", "cams"]
    images = torch.randn(3, 3, meta.input_size, meta.input_size, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([-1, 0, info.num_classes - 1])
    got = served.predict({"images": images.numpy(), "classes": classes.numpy()})
    with torch.no_grad():
        logits, cams = network(images, classes)
    assert np.array_equal(got["logits"], logits.numpy()) and np.array_equal(got["cams"], cams.numpy())


def test_each_trial_run_ends_as_tune_decided_not_as_the_trial_saw_it(tmp_path):
    from pipeline.dag.tracking import SETTINGS_TAG
    from pipeline.train.tune import _end_trial_runs

    layout = Layout(tmp_path)
    client = client_for(layout)
    experiment = experiment_id(client, "synth", layout)
    parent = open_run(client, experiment, "tune", "parent", {}, {}, layout.root)
    children = {}
    for name, status in (("done", "FINISHED"), ("stopped", "FAILED"), ("stopped-running", "RUNNING"), ("raised", "RUNNING")):
        children[name] = open_run(client, experiment, name, name, {}, {SETTINGS_TAG: name}, layout.root, parent)
        if status != "RUNNING":
            client.set_terminated(children[name], status=status)
    # the stopped trial saw its controller die (FAILED); Tune recorded a stop, no error
    _end_trial_runs(client, experiment, parent, {"done": None, "stopped": None, "stopped-running": None,
                                                 "raised": RuntimeError("boom")})
    assert {name: client.get_run(run).info.status for name, run in children.items()} == {
        "done": "FINISHED", "stopped": "KILLED", "stopped-running": "KILLED", "raised": "FAILED"}
