"""The whole DAG: a real `dvc repro` in a temporary git repository, then what a params change reruns."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.dag.code_deps import REPORTING_ONLY, code_deps, fingerprint, identity_code, is_code
from pipeline.dag.paths import Layout
from pipeline.dag.stage_runner import matrix_item
from pipeline.dag.tracking import split_digest
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.export.served_model import fluent_store
from pipeline.formats.export_folder import load_exported
from pipeline.report.colours import method_colour, row_colour
from pipeline.settings import yaml_io
from pipeline.settings.params_file import apply_fragment
from pipeline.settings.registry import BACKBONES, METHODS
from tests.helpers import params

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "backbones": ["resnet50"], "methods": ["icl", "adl"],  # the paper's method, and ADL: the module it must not depend on
    "datasets.synth.classes": 2, "datasets.synth.images_per_class": {"train": 6, "val": 2, "test": 3},
    "datasets.synth.image_size": 32, "data.crop": 32, "data.resize": 36,
    "backbone_settings.resnet50.epochs": 1, "backbone_settings.resnet50.batch_size": 6,
    "ray.num_workers": 1, "ray.cpus_per_worker": 1, "train.gallery_images": 2, "report.gallery_images": 2,
    "ray.system_metrics_interval": 0.5, "few_shot.epochs": 1, "few_shot.batch_size": 4,
    # ADL's settings by the protocol's search (2 trials on train-fullsup); ICL trains with params.yaml's
    "method_settings.adl.search.trials": 2, "tune.grace_period": 1, "tune.lr_decay_epochs": {"low": 1, "high": 2, "integer": True},
}
ROWS = {"features@resnet50", "few_shot@resnet50"}  # the reference rows of the backbone


def declared_code(dvc_file: str) -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / dvc_file).read_text())["stages"]
    return {name: [d for d in stage["deps"] if is_code(d)] for name, stage in stages.items()}


def test_every_stage_declares_the_code_its_entry_point_imports():
    assert declared_code("dvc.yaml") == code_deps(ROOT / "dvc.yaml"), "run `python -m pipeline.dag.code_deps` to rewrite them"


def test_readers_depend_on_the_formats_they_read_not_on_the_writers():
    declared = declared_code("dvc.yaml")
    assert "pipeline/formats/export_folder.py" in declared["evaluate"]
    assert "pipeline/formats/run_folder.py" in fingerprint("resnet18", "cam", ROOT / "stages/export.py")["files"]
    assert declared["train"] == declared["export"] == []  # they follow their run's fingerprint
    for reader in ("evaluate", "report"):  # they read .pt2 files and records: neither the models nor Ray's training code
        assert not any(d.startswith(("pipeline/models", "pipeline/train")) for d in declared[reader]), reader
    loaded = subprocess.run([sys.executable, "-c", "import sys, pipeline.evaluation.evaluate, pipeline.report.report, pipeline.evaluation.localize; "
                             "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'onnx', 'onnxruntime'}))"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_run_identity_hashes_what_computes_its_result_only():
    worker = ROOT / "pipeline/train/worker.py"
    icl = fingerprint("resnet18", "icl", worker, leave_out=REPORTING_ONLY)
    files = set(icl["files"])
    assert {"pipeline/train/worker.py", "pipeline/models/methods/icl.py", "pipeline/models/attention.py",
            "pipeline/data/loading.py", "pipeline/metrics/box_evaluator.py"} <= files
    reporting = {"pipeline/report/figures.py", "pipeline/train/outputs.py", "pipeline/train/driver.py", *REPORTING_ONLY}
    assert not files & reporting  # a colour or a log line changes no result: no retraining
    assert "pipeline/settings/registry.py" not in files and icl["entries"]["method"]["implementation"].endswith("icl:ICL")
    adl = fingerprint("resnet18", "adl", worker, leave_out=REPORTING_ONLY)
    assert set(adl["files"]) ^ files == {"pipeline/models/methods/icl.py", "pipeline/models/methods/adl.py"}
    assert identity_code("resnet18", "icl") != identity_code("resnet18", "icl_no_ca") != identity_code("resnet18", "adl")


def dvc(repo: Path, *args: str, stdout_only: bool = False) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def make_repo(repo: Path, settings: dict) -> Path:
    """A git repository holding the project's pipeline, stages and dvc.yaml with these params."""
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "sources.yaml"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # the project's: numba's cache in __pycache__ is not code
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the project's cache links and remote
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")  # the project's, over dvc init's template
    for command in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("project"), params(**TINY))


@pytest.mark.dvc
def test_a_command_in_a_params_value_never_reaches_the_shell(tmp_path):
    injected = "resnet18; touch INJECTED"  # what a shared params file or `dvc exp run -S` could hold
    settings = params(backbones=[injected])
    settings["backbone_settings"][injected] = settings["backbone_settings"]["resnet18"]  # so DVC finds its params
    repo = make_repo(tmp_path, settings)
    result = subprocess.run(["dvc", "repro", "--single-item", f"pretrain@{injected}"], cwd=repo, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"})
    assert result.returncode != 0 and not (repo / "INJECTED").exists()
    assert f"'{injected}' is not a registered backbone" in result.stderr + result.stdout
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert not [name for name, stage in stages.items() if "${" in stage["cmd"]]


@pytest.mark.dvc
@pytest.mark.parametrize("profile", ["paper-cub", "paper-ilsvrc"])
def test_a_paper_profile_plans_every_backbone_and_method_on_its_dataset(tmp_path, profile):
    repo = make_repo(tmp_path, params())
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")  # the project's text, anchors and comments
    apply_fragment(ROOT / "infra" / "params" / f"{profile}.yaml", repo / "params.yaml")
    # `dvc repro --dry` stops at the first stage whose input a real run would download (data/raw/<dataset>)
    planned = set(dvc(repo, "stage", "list", "--name-only", stdout_only=True).split())
    runs = {f"{b}-{m}-0" for b in ("vgg16", "inception_v3", "resnet50") for m in ("cam", "has", "acol", "spg", "adl", "cutmix", "icl")}
    assert {f"{stage}@{run}" for stage in ("train", "export", "evaluate") for run in runs} <= planned
    assert {f"search@{run[:-2]}" for run in runs} <= planned  # the protocol's search, 30 trials where nothing is published
    assert {"download", "split", "prepare", "baseline", "report"} <= planned
    assert not any("resnet18" in name or "icl_" in name for name in planned)  # the default's backbone, Table 2's rows


def test_matrix_stages_take_their_item_from_the_name_dvc_runs_them_under():
    assert not [name for name in (*BACKBONES, *METHODS) if "-" in name]  # DVC joins matrix values with "-"
    assert matrix_item("train@resnet18-icl_no_ca--3", "train", ("backbone", "method", "seed")) == \
        {"backbone": "resnet18", "method": "icl_no_ca", "seed": -3}
    assert matrix_item("pretrain@vgg16", "pretrain", ("backbone",)) == {"backbone": "vgg16"}
    for addressing, message in (("export@resnet18-cam-0", "not a train@<item> stage"),
                                ("train@resnet18-cam", "expected <backbone>-<method>-<seed>"),
                                ("train@resnet18-cam-0x", "seed '0x' is not an integer"),
                                ("train@resnet9-cam-0", "'resnet9' is not a registered backbone")):
        with pytest.raises(ValueError, match=re.escape(message)):
            matrix_item(addressing, "train", ("backbone", "method", "seed"))


def _plots(repo: Path) -> dict[str, list[dict]]:
    """`dvc plots show --json`'s data: title -> its rows."""
    shown = json.loads(dvc(repo, "plots", "show", "--json", stdout_only=True))["data"]
    return {title: [row for chart in charts for row in chart["content"]["data"]["values"]] for title, charts in shown.items()}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _mlflow_records_the_runs(repo: Path) -> None:
    """The MLflow store after the DAG: who ran what code on which data, system metrics, the test
    scores at the last epoch's step, and a registered model that serves what the export computes."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wsol-synth")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the training view first
    assert experiment.artifact_location == "mlartifacts/wsol-synth"  # relative: the project may move
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'synth-resnet50-icl-seed0'")
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.user"] and tags["mlflow.source.name"].endswith("stages/train.py")
    assert (tags["mlflow.source.type"], tags["mlflow.source.git.commit"]) == ("LOCAL", head)
    assert tags["mlflow.source.git.dirty"] == "false"  # outputs and dvc.lock changed, the code did not
    assert len(tags["wsol.settings_hash"]) == 12
    assert tags["mlflow.runColor"] == method_colour("icl")  # the method's colour in MLflow's charts, as in the report
    (few_shot_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'few-shot-resnet50'")
    assert few_shot_run.data.tags["mlflow.runColor"] == row_colour("few-shot")
    info = DatasetInfo.load(repo / "data/splits/synth")
    inputs = {i.dataset.name: (i.dataset.digest, i.tags[0].value) for i in run.inputs.dataset_inputs}
    assert inputs == {"synth/train-weaksup": (split_digest(info, "train"), "training"),
                      "synth/train-fullsup": (split_digest(info, "val"), "validation"),
                      "synth/test": (split_digest(info, "test"), "evaluation")}
    metrics = run.data.metrics
    assert "epoch" not in metrics and "val_localization" not in metrics and "val_maxboxacc_v2" in metrics
    assert any(k.startswith("system/cpu_utilization_percentage") for k in metrics)
    assert any(k.startswith("system/system_memory_usage_megabytes") for k in metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_maxboxacc_v2")] == [0]  # bars in its charts
    assert not [k for k in run.data.params if "vgg16" in k or "inception_v3" in k]  # this backbone's settings only
    with fluent_store(Layout(repo)):
        served = mlflow.pyfunc.load_model("models:/wsol-synth-resnet50-icl/1")
    network, meta = load_exported(repo / "exports/synth/resnet50-icl-seed0")
    images = torch.randn(2, 3, meta.input_size, meta.input_size, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([-1, 1])
    got = served.predict({"images": images.numpy(), "classes": classes.numpy()})
    with torch.no_grad():
        logits, cams = network(images, classes)
    assert np.array_equal(got["logits"], logits.numpy()) and np.array_equal(got["cams"], cams.numpy())
    assert served.metadata.signature.inputs.input_names() == ["images", "classes"]
    moved = repo.parent / "moved"  # a copy of the store elsewhere reads its own artifacts
    moved.mkdir()
    shutil.copy(repo / "mlflow.db", moved)
    shutil.copytree(repo / "mlartifacts", moved / "mlartifacts")
    (moved / "mlartifacts/wsol-synth" / run.info.run_id / "artifacts/metrics.json").write_text("{}")
    with contextlib.chdir(moved):
        copied = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
        fetched = copied.download_artifacts(run.info.run_id, "metrics.json", str(moved))
        assert Path(fetched).read_text() == "{}"


def _the_search_feeds_its_method_training(repo: Path) -> None:
    """ADL's search ran its 2 trials on train-fullsup; its run trained with the best one's settings,
    as its model.json, the report and MLflow (the trials and the run under the search's run) say.
    ICL's searched nothing: its run trains with params.yaml's settings."""
    searched = json.loads((repo / "searches/synth/resnet50-adl.json").read_text())
    assert searched["trials"] == 2 and 0 <= searched["score"] <= 100
    optimiser = {k.removeprefix("method_settings.adl.optimiser.resnet50."): v for k, v in searched["values"].items()
                 if k.startswith("method_settings.adl.optimiser.resnet50.")}
    assert set(optimiser) == {"lr", "weight_decay", "lr_decay_epochs", "source"}
    assert optimiser["source"] == f"searched: best of 2 trials on synth train-fullsup, val localization {searched['score']:.2f}"
    run = json.loads((repo / "runs/synth/resnet50-adl-seed0/model.json").read_text())
    assert run["settings"]["method"]["optimiser"] == {"resnet50": optimiser}  # what it trained with
    assert {k: run["settings"]["method"][k.rsplit(".", 1)[1]] for k in searched["values"] if k.count(".") == 2} == {
        k: v for k, v in searched["values"].items() if k.count(".") == 2}  # drop_rate, threshold: the search's
    assert json.loads((repo / "searches/synth/resnet50-icl.json").read_text())["trials"] == 0
    icl = json.loads((repo / "runs/synth/resnet50-icl-seed0/model.json").read_text())
    assert icl["settings"]["method"]["optimiser"] == {}
    assert f"| {optimiser['source']} |" in (repo / "report/synth/report.md").read_text()
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wsol-synth").experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{searched['mlflow_run_id']}'")
    assert sorted(r.info.run_name for r in children) == ["synth-resnet50-adl-seed0"] * 3  # 2 trials, then the run they chose
    assert client.get_run(searched["mlflow_run_id"]).data.metrics["best_val_localization"] == searched["score"]


def _pushed_then_pulled_into_a_clone(repo: Path, remote: Path, clone: Path) -> None:
    """The round trip of the README: commit, `dvc push` to a folder remote, then a fresh clone that
    `dvc pull`s has every output and nothing to rerun, without training."""
    dvc(repo, "remote", "modify", "local", "url", str(remote))
    for command in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    dvc(repo, "push")
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    assert not (clone / "runs/synth/resnet50-icl-seed0/model.pt").exists()
    dvc(clone, "pull")
    assert _md5(clone / "runs/synth/resnet50-icl-seed0/model.pt") == _md5(repo / "runs/synth/resnet50-icl-seed0/model.pt")
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    assert stages_run(dvc(clone, "repro")) == set()  # nothing trains again


@pytest.mark.slow
@pytest.mark.dvc
@pytest.mark.ray
def test_dvc_repro_runs_the_dag_then_reruns_only_what_is_stale(repo):
    first = dvc(repo, "repro")
    runs = [f"{stage}@resnet50-{method}-0" for stage in ("train", "export", "evaluate") for method in TINY["methods"]]
    fingerprints = [f"{stage}@resnet50-{method}" for stage in ("fingerprint", "search") for method in TINY["methods"]]
    assert stages_run(first) == {"download", "split", "prepare", "pretrain@resnet50", "baseline", "report", *runs,
                                 *fingerprints, "fingerprint_rows@resnet50", *ROWS}
    _the_search_feeds_its_method_training(repo)
    assert np.load(repo / "data/prepared/synth/train.npy", mmap_mode="r").dtype == np.uint8  # training's pixels
    report = repo / "report" / "synth" / "report.md"
    assert "| Ours (ICL) |" in report.read_text() and (repo / "report/synth/gallery_resnet50.png").is_file()
    for row in ("Center Gaussian (floor)", "Pretrained features", "Few-shot (train-fullsup masks)"):
        assert f"| {row} |" in report.read_text()
    assert (repo / "exports/synth/resnet50-icl-seed0/model.pt2").is_file()
    shown = json.loads(dvc(repo, "metrics", "show", "--json", stdout_only=True))[""]["data"]  # the workspace
    assert set(shown) == {f"results/synth/{row}/scores.json" for row in (  # the test headline only: one row each
        "resnet50-icl-seed0", "resnet50-adl-seed0", "center-gaussian", "features-resnet50", "few-shot-resnet50")}
    assert set(shown["results/synth/resnet50-icl-seed0/scores.json"]["data"]) == {
        "maxboxacc_v2", "maxboxacc_v2_ci_low", "maxboxacc_v2_ci_high", "top1_loc", "top1_cls", "gt_known_loc", "pxap"}
    plots = _plots(repo)
    assert set(plots) == {"val MaxBoxAccV2 per epoch (train-fullsup)", "test BoxAcc against the CAM threshold, per IoU",
                          "test pixel precision-recall (mask datasets)"}
    for title in plots:
        labelled = {row["run"] for row in plots[title]}
        assert {"ResNet50 ADL seed 0", "ResNet50 Ours (ICL) seed 0"} <= labelled, title  # one line per run, named
        assert {"ADL", "Ours (ICL)"} <= {row["method"] for row in plots[title]}, title  # coloured by method

    assert stages_run(dvc(repo, "repro")) == set()  # nothing is stale
    assert "Data and pipelines are up to date" in dvc(repo, "status")  # numba's JIT cache is not a dependency
    model = repo / "runs/synth/resnet50-adl-seed0/model.pt"
    cached = repo / ".dvc/cache/files/md5" / _md5(model)[:2] / _md5(model)[2:]
    assert os.path.samefile(model, cached)  # linked to the cache, not copied (.dvc/config cache.type)
    _mlflow_records_the_runs(repo)
    _pushed_then_pulled_into_a_clone(repo, repo.parent / "remote", repo.parent / "clone")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    code = next(d for d in lock["fingerprint@resnet50-adl"]["deps"] if d["path"] == "pipeline")
    assert code["nfiles"] == len([p for p in (repo / "pipeline").rglob("*") if p.is_file() and "__pycache__" not in p.parts])

    def stale() -> set[str]:
        return set(re.findall(r"^(\S+):", dvc(repo, "status"), re.M))

    def stale_after_fingerprints() -> set[str]:
        """What a code change makes stale, once the fingerprint stages have run (as dvc repro runs them first)."""
        assert stale() >= {f"fingerprint@resnet50-{m}" for m in TINY["methods"]} | {"fingerprint_rows@resnet50"}
        dvc(repo, "repro", "--glob", "fingerprint*")  # they follow every code change
        return stale()

    def per_run(stages: tuple[str, ...], methods: tuple[str, ...]) -> set[str]:
        return {f"{s}@resnet50-{m}-0" for s in stages for m in methods}

    # The DAG's code state (dvc.lock, the fingerprints) before each edit, put back with the module
    # instead of rerunning the fingerprint stages: the same files as a rerun would write.
    clean_state = {p: p.read_bytes() for p in [repo / "dvc.lock", *(repo / "fingerprints").glob("*.json")]}
    for module, expected in (
            ("pipeline/formats/export_folder.py", per_run(("export", "evaluate"), TINY["methods"]) | {"baseline", "report"} | ROWS),
            ("pipeline/models/methods/icl.py", per_run(("train", "export"), ("icl",)) | {"search@resnet50-icl"}),
            ("pipeline/models/methods/adl.py", per_run(("train", "export"), ("adl",)) | {"search@resnet50-adl"})):  # only its own
        original = (repo / module).read_text()
        (repo / module).write_text(original + "\n# edited\n")
        assert stale_after_fingerprints() == expected, module
        (repo / module).write_text(original)
        for path, data in clean_state.items():
            path.write_bytes(data)
    assert "Data and pipelines are up to date" in dvc(repo, "status")

    settings = yaml_io.read(repo / "params.yaml")
    settings["cluster"] = {"address": "ray://head:10001", "storage_path": "s3://bucket/runs"}  # where, not what
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert "Data and pipelines are up to date" in dvc(repo, "status")

    settings["cluster"] = {"address": None, "storage_path": None}
    interval = settings["evaluate"]["cam_curve_interval"]
    settings["evaluate"]["cam_curve_interval"] = interval * 2  # what dvc repro would rerun; put back, not rerun
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert stale() == per_run(("evaluate",), TINY["methods"]) | {"baseline"} | ROWS  # and the report, after them
    settings["evaluate"]["cam_curve_interval"] = interval

    margin = settings["method_settings"]["icl"]["margin"]
    settings["method_settings"]["icl"]["margin"] = margin / 2  # one method's setting retrains that method only
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert stale() == {"search@resnet50-icl", "train@resnet50-icl-0"}  # what its search and its run train with

    settings["seeds"] = [0, 1]  # a second seed: its own runs; nothing of seed 0's reruns for it
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert stale() == {"search@resnet50-icl", "train@resnet50-icl-0", "report",
                       *(f"{s}@resnet50-{m}-1" for s in ("train", "export", "evaluate") for m in TINY["methods"])}

    settings["seeds"] = [0]
    settings["method_settings"]["icl"]["margin"] = margin
    settings["method_settings"]["adl"]["search"]["space"]["threshold"]["low"] = 0.5  # one method's search space
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert stale() == {"search@resnet50-adl", "train@resnet50-adl-0"}  # and, once they have run, ADL's downstream
    settings["method_settings"]["adl"]["search"]["space"]["threshold"]["low"] = 0.0  # back as trained: nothing to rerun
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    assert stages_run(dvc(repo, "repro")) == set()  # the params as they were trained: nothing is stale
    _a_new_method_runs_alone(repo, settings)


NEW_METHOD = '''"""A method a user adds (tests/test_dag.py): CAM whose classifier sees the feature halved."""

from pipeline.models.methods.base import CAM


class HalfCAM(CAM):
    def head(self, feature, labels, state):
        return super().head(feature / 2, labels, state)
'''


def _a_new_method_runs_alone(repo: Path, settings: dict) -> None:
    """Adding a method (its module, one registry entry, its params section, its name in methods)
    runs its own stages, the cheap fingerprints and the report: no other run trains, exports or
    evaluates again."""
    (repo / "pipeline/models/methods/half_cam.py").write_text(NEW_METHOD)
    registry = (repo / "pipeline/settings/registry.py").read_text()
    anchor = '    MethodEntry("cam", "CAM", CamConfig, "cam", "pipeline.models.methods.base:CAM", {}),\n'
    assert anchor in registry
    (repo / "pipeline/settings/registry.py").write_text(registry.replace(anchor, anchor + '    MethodEntry("half_cam", "Half CAM", '
                                               'CamConfig, "cam", "pipeline.models.methods.half_cam:HalfCAM", {}),\n'))
    settings["method_settings"]["half_cam"] = {}
    settings["methods"] = [*TINY["methods"], "half_cam"]
    (repo / "params.yaml").write_text(yaml_io.dump(settings))
    ran = stages_run(dvc(repo, "repro"))
    fingerprints = {f"fingerprint@resnet50-{m}" for m in settings["methods"]}
    assert ran == fingerprints | {"fingerprint_rows@resnet50", "search@resnet50-half_cam", "report"} | {
        f"{s}@resnet50-half_cam-0" for s in ("train", "export", "evaluate")}
    assert "| Half CAM |" in (repo / "report/synth/report.md").read_text()
