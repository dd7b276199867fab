"""Training on Ray Train (a real local Ray: several workers, two nodes, killed workers), tracked in
a real MLflow store, and the Ray Tune search."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray
import torch
import torchvision
from mlflow.tracking import MlflowClient

from pipeline.dag.paths import MANIFEST, Layout
from pipeline.dag.tracking import in_project
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.formats.run_cost import read_cost
from pipeline.formats.run_folder import read_meta
from pipeline.models import build_model
from pipeline.settings import yaml_io
from pipeline.settings.config import Optimiser, load_config, with_values
from pipeline.train import state as saved
from pipeline.train.driver import fit, prune_checkpoints, run_identity
from pipeline.train.epoch import train_epoch
from pipeline.train.outputs import write_outputs
from pipeline.train.recipe import grad_scaler, optimizer_for, scheduler_for, seed_everything, term_gradient_norms
from pipeline.train.tune import OPTIMISER_DIMENSIONS, resolve, search_space, settings_of
from pipeline.train.worker import node_label
from tests import helpers
from tests.helpers import config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
TINY = {
    "datasets.synth.classes": 2, "datasets.synth.images_per_class": {"train": 16, "val": 4, "test": 4},
    "datasets.synth.image_size": 32, "datasets.synth.context_bias": 0.5, "data.crop": 32, "data.resize": 36,
    "backbone_settings.resnet50.epochs": EPOCHS, "backbone_settings.resnet50.batch_size": 16,
    "backbone_settings.resnet50.lr": 0.002, "ray.num_workers": 2, "ray.cpus_per_worker": 1,
    "train.gallery_images": 2, "train.log_every": 1,
}


def make_project(root: Path, **overrides) -> Layout:
    """The tiny project, with these training settings."""
    return helpers.make_project(root, **{**TINY, **overrides})


@pytest.fixture
def fresh_ray():
    ray.shutdown()
    yield
    ray.shutdown()


def mlflow_client(layout: Layout) -> MlflowClient:
    return MlflowClient(f"sqlite:///{layout.mlflow_db}")


def runs_named(layout: Layout, name: str):
    client = mlflow_client(layout)
    experiment = client.get_experiment_by_name("wsol-synth")
    return [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == name]


def assert_whole_history(history):
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))  # every epoch, once


# ----------------------------------------------------------------------------------------- fast

def test_the_run_identity_follows_settings_code_and_data(tmp_path):
    layout = make_project(tmp_path / "p", **{"datasets.synth.images_per_class": {"train": 2, "val": 1, "test": 1}})
    cfg = load_config(layout.root / "params.yaml")
    info = DatasetInfo.load(layout.split("synth"))
    base = run_identity(cfg, "resnet50", "cam", 0, info, layout)
    assert base == run_identity(cfg, "resnet50", "cam", 0, info, layout)
    assert base != run_identity(cfg, "resnet50", "cam", 1, info, layout)
    assert base != run_identity(cfg, "resnet50", "adl", 0, info, layout)
    assert base == run_identity(with_values(cfg, {"ray.max_failures": 5, "method_settings.adl.drop_rate": 0.1,
                                                  "cluster.storage_path": "s3://elsewhere", "seeds": [0, 1]}, "edits"),
                                "resnet50", "cam", 0, info, layout)  # none changes what a CAM run computes
    (info.folder / "metadata/val/localization.txt").write_text(
        (info.folder / "metadata/val/localization.txt").read_text().replace(",", ",1", 1))
    assert base != run_identity(cfg, "resnet50", "cam", 0, info, layout)


def test_system_metrics_are_labelled_per_node_only_when_the_run_spans_several():
    assert node_label(0, 2, 2) is None  # two workers on one node
    assert [node_label(rank, 1, 2) for rank in (0, 1)] == ["node_0", "node_1"]  # one worker on each of two
    assert node_label(1, 4, 8) == "node_1"


def test_training_state_round_trip(tmp_path):
    cfg = config()
    model = build_model("resnet50", "cam", 2, cfg)
    optimizer, scaler = optimizer_for(model, cfg, "resnet50", "cam"), torch.amp.GradScaler("cuda", enabled=False)
    scheduler = scheduler_for(optimizer, cfg, "resnet50", "cam")
    progress = saved.TrainingState(epoch=3, history=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], best_score=5.0, best_epoch=2)
    saved.save(tmp_path, progress, model, optimizer, scheduler, scaler, best_model={"w": torch.ones(1)})
    other = build_model("resnet50", "cam", 2, cfg)
    restored = saved.load(tmp_path, other, optimizer_for(other, cfg, "resnet50", "cam"), scheduler, scaler)
    assert (restored.epoch, restored.best_epoch, restored.restarts, len(restored.history)) == (3, 2, 1, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=False))
    assert torch.equal(saved.final_weights(tmp_path, "best")[0]["w"], torch.ones(1))


def test_a_finished_runs_checkpoint_keeps_weights_and_history_only_and_still_restores(tmp_path):
    cfg = config()
    model = build_model("resnet50", "cam", 2, cfg)
    optimizer, scaler = optimizer_for(model, cfg, "resnet50", "cam"), torch.amp.GradScaler("cuda", enabled=False)
    scheduler = scheduler_for(optimizer, cfg, "resnet50", "cam")
    progress = saved.TrainingState(epoch=2, history=[{"epoch": 1}, {"epoch": 2}], device="cpu")
    saved.save(tmp_path, progress, model, optimizer, scheduler, scaler, best_model=None)
    torch.save(saved.finished(tmp_path / saved.STATE), tmp_path / saved.STATE)
    assert not set(saved.read(tmp_path / saved.STATE)) & set(saved.OPTIMIZATION)
    other = build_model("resnet50", "cam", 2, cfg)
    fresh = optimizer_for(other, cfg, "resnet50", "cam")
    restored = saved.load(tmp_path, other, fresh, scheduler_for(fresh, cfg, "resnet50", "cam"), scaler)
    assert (restored.epoch, restored.device, restored.restarts) == (2, "cpu", 1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=False))


class _RunsAShellCommand:
    """Unpickling this calls os.system: what a hostile checkpoint in shared storage could carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 1, "model": _RunsAShellCommand(marker)}, tmp_path / saved.STATE)
    with pytest.raises(saved.CheckpointError, match=r"state\.pt: refused"):
        saved.final_weights(tmp_path, "last")
    assert not marker.exists()
    (tmp_path / saved.STATE).write_bytes(b"not a checkpoint")
    with pytest.raises(saved.CheckpointError, match="not a readable checkpoint"):
        saved.final_weights(tmp_path, "last")


def test_new_layers_train_at_the_classifier_ratio_only_on_a_pretrained_backbone(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    for pretrained, expected in ((str(weights), [0.003, pytest.approx(0.03)]), (None, [0.003, 0.003])):
        cfg = config(**{"backbone_settings.resnet50.lr": 0.003, "train.lr_classifier_ratio": 10.0,
                        "backbone_settings.resnet50.pretrained": pretrained})
        groups = optimizer_for(build_model("resnet50", "icl", 2, cfg), cfg, "resnet50", "icl").param_groups
        assert [g["lr"] for g in groups] == expected


def test_the_optimiser_takes_the_backbones_lr_and_weight_decay_and_a_methods_override():
    """Per backbone: lr and weight decay in both groups; a method's override replaces the values it
    gives (here lr and decay period, not weight decay) on its backbone only, and names its source."""
    cfg = config(**{"backbones": ["resnet50", "resnet18"], "methods": ["cam", "adl"],
                    "backbone_settings.resnet50": {**config().backbone_settings.of("resnet50").model_dump(),
                                                   "lr": 0.002, "weight_decay": 5e-4, "pretrained": None},
                    "backbone_settings.resnet18.weight_decay": 1e-4, "backbone_settings.resnet18.pretrained": None,
                    "method_settings.cam.optimiser": {"resnet50": {"lr": 2.322e-4, "lr_decay_epochs": 15,
                                                                   "source": "a published script"}}})
    for backbone, method, lr, decay in (("resnet50", "cam", 2.322e-4, 5e-4), ("resnet50", "adl", 0.002, 5e-4),
                                        ("resnet18", "cam", cfg.backbone_settings.of("resnet18").lr, 1e-4)):
        optimizer = optimizer_for(build_model(backbone, method, 2, cfg), cfg, backbone, method)
        assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(lr, decay)] * 2, (backbone, method)
    assert scheduler_for(optimizer, cfg, "resnet50", "cam").step_size == 15
    assert cfg.optimiser("resnet50", "cam").source == "a published script"
    assert cfg.optimiser("resnet50", "adl").source == "backbone_settings.resnet50"


def test_seeds_depend_on_seed_rank_and_epoch_only():
    draws = {}
    for key in [(0, 0, 1), (0, 0, 1), (0, 1, 1), (0, 0, 2), (1, 0, 1)]:
        seed_everything(*key)
        draws.setdefault(key, []).append(torch.rand(3))
    assert torch.equal(*draws[(0, 0, 1)])
    assert len({tuple(v[0].tolist()) for v in draws.values()}) == 4


def test_an_optimiser_override_no_run_reads_is_named():
    published = {"resnet50": {"lr": 2.3e-4, "source": "a script"}}
    with pytest.raises(ValueError, match=r"method_settings\.cam\.optimiser\.resnet50: resnet50 is not run"):
        config(**{"backbones": ["resnet18"], "methods": ["cam"], "method_settings.cam.optimiser": published})
    with pytest.raises(ValueError, match=r"method_settings\.adl\.optimiser: adl is not run"):
        config(**{"backbones": ["resnet50"], "methods": ["cam"], "method_settings.adl.optimiser": published})
    # a Table 2 row may carry the paper's method's own override (params.yaml's <<: *icl), not another one
    inherited = config(**{"backbones": ["resnet50"], "methods": ["icl"], "method_settings.icl.optimiser": published,
                          "method_settings.icl_no_ca.optimiser": published})
    assert inherited.optimiser("resnet50", "icl_no_ca").source == "a script"
    with pytest.raises(ValueError, match=r"method_settings\.icl_no_ca\.optimiser: icl_no_ca is not run"):
        config(**{"backbones": ["resnet50"], "methods": ["icl"], "method_settings.icl_no_ca.optimiser": published})


def test_every_method_searches_its_optimiser_on_the_backbone_and_its_own_settings():
    cfg = config(**{"backbones": ["vgg16", "resnet50"]})
    for method in ("cam", "has", "acol", "spg", "adl", "cutmix", "icl"):
        dimensions = search_space(cfg, "vgg16", method)
        assert {key: dimensions[key] for key in OPTIMISER_DIMENSIONS} == {  # the override the run reads
            key: (f"method_settings.{method}.optimiser.vgg16.{key}", getattr(cfg.tune, key)) for key in OPTIMISER_DIMENSIONS}
        assert set(dimensions) == {*OPTIMISER_DIMENSIONS, *getattr(cfg.method_settings, method).search.space}
    assert search_space(cfg, "vgg16", "icl")["gamma_fg"][0] == "method_settings.icl.hyper.vgg16.gamma_fg"
    assert search_space(cfg, "resnet50", "adl")["threshold"][0] == "method_settings.adl.threshold"
    assert search_space(cfg, "resnet50", "spg")["threshold_2l"][0] == "method_settings.spg.thresholds.1.1"
    with pytest.raises(ValueError, match="a draw: invalid configuration:\n  method_settings.icl.hyper.vgg16.drop_rate"):
        with_values(cfg, {"method_settings.icl.hyper.vgg16.drop_rate": 1.5}, "a draw")
    draw = {"method_settings.cam.optimiser.vgg16.lr": 0.01, "method_settings.cam.optimiser.vgg16.weight_decay": 3e-4,
            "method_settings.cam.optimiser.vgg16.lr_decay_epochs": 2, "method_settings.cam.optimiser.vgg16.source": "a search"}
    drawn = with_values(cfg, draw, "a draw")  # the override made where the method had none
    assert drawn.optimiser("vgg16", "cam") == Optimiser(0.01, 3e-4, 2, "a search")
    assert drawn.optimiser("resnet50", "cam") == cfg.optimiser("resnet50", "cam")  # the other backbone's as it was


def test_a_low_threshold_is_drawn_under_its_high_one_and_lists_are_set_whole():
    cfg = config(**{"backbones": ["resnet50"], "methods": ["spg", "has"]})
    dimensions = search_space(cfg, "resnet50", "spg")
    draw = {"lr": 0.01, "weight_decay": 1e-4, "lr_decay_epochs": 3, "threshold_1h": 0.4, "threshold_1l": 0.5, "threshold_2h": 0.9, "threshold_2l": 1.0,
            "threshold_3h": 0.2, "threshold_3l": 0.0}
    values = resolve(draw, dimensions)  # each low: its [0, 1] draw mapped onto [0, its high]
    assert values["method_settings.spg.thresholds.0.1"] == pytest.approx(0.2)
    assert values["method_settings.spg.thresholds.1.1"] == pytest.approx(0.9)
    assert values["method_settings.spg.thresholds.2.1"] == 0.0
    tuned = with_values(cfg, {**values, "method_settings.spg.optimiser.resnet50.source": "a search"}, "a draw")
    assert tuned.method_settings.spg.thresholds == [[0.4, 0.2], [0.9, pytest.approx(0.9)], [0.2, 0.0]]
    assert settings_of(tuned, values) == {"method_settings.spg.optimiser.resnet50.lr": 0.01,
                                          "method_settings.spg.optimiser.resnet50.weight_decay": 1e-4,
                                          "method_settings.spg.optimiser.resnet50.lr_decay_epochs": 3,
                                          "method_settings.spg.thresholds": tuned.method_settings.spg.thresholds}
    grid = resolve({"lr": 0.01, "weight_decay": 1e-4, "lr_decay_epochs": 3.0, "grid_size": 17.0, "drop_rate": 0.3},
                   search_space(cfg, "resnet50", "has"))
    assert grid["method_settings.has.grid_size"] == 17 and isinstance(grid["method_settings.has.grid_size"], int)


def test_a_search_space_key_a_method_lacks_is_refused():
    with pytest.raises(ValueError, match=r"method_settings.adl.search.space.gamma_bg: adl has no searchable "
                                         r"setting 'gamma_bg' \(it has: drop_rate, threshold\)"):
        config(**{"method_settings.adl.search.space": {"gamma_bg": {"low": 0.0, "high": 1.0}}})
    with pytest.raises(ValueError, match=r"method_settings.spg.search.space.threshold_1l.below: 'threshold_9h' is not "
                                         r"another setting of its space"):
        config(**{"method_settings.spg.search.space.threshold_1l.below": "threshold_9h"})


# ------------------------------------------------------------------------------ real Ray (slow)

@pytest.mark.slow
@pytest.mark.ray
def test_two_gloo_workers_train_checkpoint_and_track_in_mlflow(tmp_path, fresh_ray):
    layout = make_project(tmp_path / "p")
    cfg = load_config(layout.root / "params.yaml")
    trained = fit(cfg, layout, "resnet50", "icl", 0)
    assert_whole_history(trained.progress.history)
    assert all(math.isfinite(row["loss"]) for row in trained.progress.history)
    seed_everything(0, 0, -1)  # the initial weights, as every worker built them
    initial = build_model("resnet50", "icl", 2, cfg).state_dict()
    changed = [k for k, v in trained.state_dict.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("method.attention.") for k in changed)
    assert (Path(layout.ray_storage) / trained.ray_name / "checkpoint_manager_snapshot.json").is_file()
    out = write_outputs(trained, cfg, layout)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "cost.json", "figures", "history.csv", "metrics.json",
                                                     "model.json", "model.pt"]
    assert read_meta(out).selected_epoch == EPOCHS
    cost = read_cost(out)
    assert (cost.device, cost.workers, cost.epochs) == ("cpu", 2, EPOCHS) and cost.wall_s > 0 and cost.images_per_s > 0

    (run,) = runs_named(layout, "synth-resnet50-icl-seed0")
    client = mlflow_client(layout)
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "icl" and run.data.params["method_settings.hyper.drop_rate"] == "0.85"
    assert run.data.params["method_settings.taps"] == "['layer3.0', 'layer4.0', 'layer4.2']"  # ResNet50's only
    assert run.data.params["backbone_settings.lr"] == "0.002" and run.data.params["ray.num_workers"] == "2"
    assert run.data.tags["mlflow.user"] and run.data.tags["wsol.ray_run"] == trained.ray_name
    assert "mlflow.source.git.commit" not in run.data.tags  # not a git checkout: no commit claimed
    assert {m for m in run.data.metrics if m.startswith("system/")} >= {"system/cpu_utilization_percentage"}
    diagnostics = ("attention/layer3.0/drop_empty", "attention/layer4.2/val_auc_attention",
                   "attention/layer4.2/val_auc_channel_mean", "grad/clipped_steps", "grad/ca/share")
    for metric in ("loss_ca", "loss_fc", "val_maxboxacc_v2", "val_top1_cls", *diagnostics):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(1, EPOCHS + 1))
    history = (out / "history.csv").read_text().splitlines()
    assert set(diagnostics) <= set(history[0].split(",")) and len(history) == EPOCHS + 1
    selected = json.loads((out / "metrics.json").read_text())  # dvc metrics: results, not diagnostics
    assert "val_maxboxacc_v2" in selected and not any("/" in key for key in selected)
    assert all(0 <= row["attention/layer4.2/val_auc_attention"] <= 1 for row in trained.progress.history)
    with in_project(layout):
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {"model.json", "metrics.json", "history.csv", "cost.json", "figures"}  # weights: not here
        assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {"figures/val_boxacc.png",
                                                                                         "figures/val_gallery.png"}

    prune_checkpoints(trained)  # the model is an output now: its checkpoint keeps weights and history only
    (left,) = [p for p in (Path(layout.ray_storage) / trained.ray_name).glob("checkpoint_*") if p.is_dir()]
    assert set(saved.read(left / saved.STATE)) == {"epoch", "history", "best_score", "best_epoch", "restarts", "device",
                                                   "model"}
    again = fit(cfg, layout, "resnet50", "icl", 0)  # the finished run is found, not retrained
    assert again.progress.history == trained.progress.history
    assert all(torch.equal(again.state_dict[k], v) for k, v in trained.state_dict.items())


@pytest.mark.slow
@pytest.mark.ray
def test_two_nodes_on_one_machine_run_the_same_trainer(tmp_path, fresh_ray):
    from ray.cluster_utils import Cluster

    layout = make_project(tmp_path / "p", **{"backbone_settings.resnet50.epochs": 2, "ray.system_metrics_interval": 0.5})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        assert [node["Resources"]["CPU"] for node in ray.nodes() if node["Alive"]] == [1.0, 1.0]
        # two workers of one CPU each cannot share a node here: the run spans both
        trained = fit(load_config(layout.root / "params.yaml"), layout, "resnet50", "cam", 0)
        assert [row["epoch"] for row in trained.progress.history] == [1, 2]
        # Ray Train counts workers of one IP address as one node: here one series, unlabelled (node_label)
        metrics = mlflow_client(layout).get_run(trained.mlflow_run_id).data.metrics
        assert "system/cpu_utilization_percentage" in metrics
    finally:
        ray.shutdown()
        cluster.shutdown()


def _snapshot_checkpoints(storage: Path) -> int:
    snapshots = list(storage.glob("*/checkpoint_manager_snapshot.json"))
    if not snapshots:
        return 0
    try:
        return snapshots[0].read_text().count('"checkpoint_dir_name"')
    except OSError:
        return 0


def _wait_for_checkpoint(storage: Path, timeout: float = 240) -> None:
    """Until Ray Train has registered a checkpoint (after this, a restart resumes from it)."""
    deadline = time.time() + timeout
    while _snapshot_checkpoints(storage) < 1:
        if time.time() > deadline:
            raise TimeoutError("no checkpoint registered")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.ray
def test_a_killed_worker_is_restarted_from_the_last_checkpoint(tmp_path, fresh_ray):
    layout = make_project(tmp_path / "p")
    cfg = load_config(layout.root / "params.yaml")
    result = {}
    thread = threading.Thread(target=lambda: result.update(trained=fit(cfg, layout, "resnet50", "cam", 0)))
    thread.start()
    _wait_for_checkpoint(layout.ray_storage)
    # this test's own worker only (its raylet is a child of this process): another Ray on the machine,
    # a user's training, is never touched
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
               and any(parent.pid == os.getpid() for parent in p.parents())]
    assert workers, "no Ray Train worker process of this test found"
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=600)
    trained = result["trained"]
    assert trained.progress.restarts >= 1
    assert_whole_history(trained.progress.history)


@pytest.mark.slow
@pytest.mark.ray
def test_a_killed_train_stage_resumes_when_run_again(tmp_path):
    layout = make_project(tmp_path / "p")
    command = [sys.executable, str(ROOT / "stages" / "train.py"), "--backbone", "resnet50", "--method", "adl", "--seed", "0"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "stages" / "search.py"), "--backbone", "resnet50", "--method", "adl"],
                   cwd=layout.root, env=environment, check=True, timeout=300)  # as dvc repro: no trials, what it trains with
    first = subprocess.Popen(command, cwd=layout.root, env=environment, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(layout.ray_storage)
        assert first.poll() is None, "the stage finished before it could be killed"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
        first.wait()
    assert not layout.run("synth", "resnet50", "adl", 0).exists()
    again = subprocess.run(command, cwd=layout.root, env=environment, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    meta = read_meta(layout.run("synth", "resnet50", "adl", 0))
    assert meta.restarts >= 1 and meta.epochs == EPOCHS
    history = (layout.run("synth", "resnet50", "adl", 0) / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(1, EPOCHS + 1)]
    (run,) = runs_named(layout, "synth-resnet50-adl-seed0")  # the resumed run logged into the same MLflow run
    assert run.info.status == "FINISHED"


def _trial_intervals(experiment: Path) -> list[tuple[float, float]]:
    """(start, end) in seconds of each Tune trial, from Tune's own result.json files."""
    intervals = []
    for trial in experiment.glob("trial_*"):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        intervals.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    return sorted(intervals)


@pytest.mark.slow
@pytest.mark.ray
def test_a_tune_search_runs_its_trials_one_at_a_time_and_writes_the_best_values(tmp_path, fresh_ray):
    layout = make_project(tmp_path / "p", **{
        "ray.num_workers": 1, "backbone_settings.resnet50.epochs": 2, "tune.backbone": "resnet50",
        "tune.num_samples": 3, "tune.max_concurrent": 1, "tune.grace_period": 1, "tune.method": "icl",
        "tune.lr": {"low": 0.001, "high": 0.01, "log": True}, "tune.lr_decay_epochs": {"low": 1, "high": 2, "integer": True},
        "method_settings.icl.search.space": {"drop_rate": {"low": 0.3, "high": 0.9}}})
    from pipeline.cli import main

    assert main(["tune", "--params", str(layout.root / "params.yaml")]) == 0
    best = yaml_io.read(layout.root / "tuning" / "synth-resnet50-icl.yaml")
    assert set(best) == {"method_settings"} and set(best["method_settings"]) == {"icl"}
    assert 0.3 <= best["method_settings"]["icl"]["hyper"]["resnet50"]["drop_rate"] <= 0.9
    optimiser = best["method_settings"]["icl"]["optimiser"]["resnet50"]  # the run's own, not the backbone's
    assert 0.001 <= optimiser["lr"] <= 0.01 and 1e-5 <= optimiser["weight_decay"] <= 1e-3
    assert optimiser["lr_decay_epochs"] in (1, 2) and optimiser["source"].startswith("searched: best of 3 trials")
    (parent,) = runs_named(layout, "tune-synth-resnet50-icl-seed0")
    children = [r for r in runs_named(layout, "synth-resnet50-icl-seed0")
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and {r.info.status for r in children} <= {"FINISHED", "KILLED"}
    (experiment,) = layout.ray_storage.glob("tune-synth-resnet50-icl-seed0-*")  # named with what it searched
    intervals = _trial_intervals(experiment)
    assert len(intervals) == 3
    assert all(end <= next_start + 1 for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False)), intervals


def _epoch_on(batches, log_every: int = 5, method: str = "cam", **overrides) -> dict[str, float]:
    """One epoch of the training loop (no Ray) of an untrained ResNet18 over these (images, labels) batches."""
    torch.manual_seed(0)
    cfg = config(**{"train.log_every": log_every, "backbone_settings.resnet18.pretrained": None, **overrides})
    model = build_model("resnet18", method, 3, cfg).train()
    optimizer, scaler = optimizer_for(model, cfg, "resnet18", method), grad_scaler(cfg, torch.device("cpu"))
    loader = [(images, labels, [f"{k}.png" for k in range(len(labels))]) for images, labels in batches]
    return train_epoch(model, model, loader, optimizer, scaler, cfg, torch.device("cpu"), 0, 1, 0, 1)


def test_the_loop_reports_the_means_over_its_images():
    torch.manual_seed(1)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))]
    stats = _epoch_on(batches)
    assert stats["loss"] == pytest.approx(stats["loss_cls"]) and stats["loss"] > 0
    assert stats["train_top1_cls"] in {k * 100 / 6 for k in range(7)}  # a count of 6 images
    assert stats["images_per_s"] > 0


def test_the_loop_counts_clipped_steps_and_averages_the_attention_figures_over_images():
    torch.manual_seed(1)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))]
    clipped_all = _epoch_on(batches, method="icl", **{"train.grad_clip": 1e-9})
    assert clipped_all["grad/clipped_steps"] == 2 and clipped_all["grad/norm"] > 1e-9
    assert _epoch_on(batches, method="icl", **{"train.grad_clip": 1e4})["grad/clipped_steps"] == 0
    assert "grad/clipped_steps" not in _epoch_on(batches, **{"train.grad_clip": 0.0})  # clipping off: nothing to count
    for tap in ("layer3.0", "layer4.0", "layer4.1"):  # ResNet18's ICL taps: every figure, as a share
        figures = {k.split("/")[2]: v for k, v in clipped_all.items() if k.startswith(f"attention/{tap}/")}
        assert {"negative", "fg_above_max", "drop_empty", "drop_area", "variation", "fg_empty", "bg_empty",
                "embedding_norm"} == set(figures)
        assert all(0 <= figures[k] <= 1 for k in ("negative", "drop_empty", "drop_area", "fg_empty", "bg_empty"))
        assert figures["negative"] == 0  # attention_sign: nonnegative
    # each loss term's gradient norm on the backbone, measured on the first step (every 25 steps)
    shares = [clipped_all[f"grad/{t}/share"] for t in ("cls", "ca", "fc")]
    assert sum(shares) == pytest.approx(1) and all(0 < v < 1 for v in shares)
    assert "grad/cls/share" not in _epoch_on(batches, **{"train.grad_terms_every": 0})


def test_term_gradient_norms_by_hand_leave_the_gradients_alone():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    terms = {"a": 3 * weight[0] + 4 * weight[1], "b": (weight**2).sum()}  # gradients (3, 4) and (2, 4)
    norms = term_gradient_norms(terms, [weight], grad_scaler(config(), torch.device("cpu")))
    assert norms["a"].item() == pytest.approx(5.0) and norms["b"].item() == pytest.approx(math.sqrt(20))
    assert weight.grad is None
    sum(terms.values()).backward()  # the graph is still there for the step's own backward
    assert torch.equal(weight.grad, torch.tensor([5.0, 8.0]))


def test_a_non_finite_loss_stops_the_loop_naming_its_first_step():
    images = [torch.randn(2, 3, 32, 32) for _ in range(3)]
    images[1][0, 0, 0, 0] = float("nan")  # step 2's loss is NaN, read at step 3 (log_every 3)
    with pytest.raises(FloatingPointError, match="epoch 1, step 2: the loss is not finite; lower the learning rate"):
        _epoch_on([(x, torch.tensor([0, 1])) for x in images], log_every=3)
