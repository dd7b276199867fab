"""The whole DAG: a real `dvc repro` in a temporary git repository, then what a params change reruns."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.train.driver import TRAINING_CODE
from tests.helpers import params

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "backbones": ["resnet50"], "methods": ["cam", "icl"],
    "datasets.synth.classes": 2, "datasets.synth.images_per_class": {"train": 6, "val": 2, "test": 3},
    "datasets.synth.image_size": 32, "data.crop": 32, "data.resize": 36,
    "backbone_settings.resnet50.epochs": 1, "backbone_settings.resnet50.batch_size": 6,
    "ray.num_workers": 1, "ray.cpus_per_worker": 1, "train.gallery_images": 2, "report.gallery_images": 2,
}


def test_the_train_stage_declares_the_code_that_identifies_a_run():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert sorted(d.removeprefix("pipeline/") for d in stage["deps"] if d.startswith("pipeline/")) == sorted(TRAINING_CODE)


def dvc(repo: Path, *args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository holding the project's pipeline, stages and dvc.yaml with tiny params."""
    repo = tmp_path_factory.mktemp("project")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(params(**TINY)))
    (repo / ".gitignore").write_text("/data/\n/ray_results/\n/mlflow.db\n/mlartifacts/\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_the_dag_then_reruns_only_what_is_stale(repo):
    first = dvc(repo, "repro")
    runs = [f"{stage}@resnet50-{method}" for stage in ("train", "export", "evaluate") for method in ("cam", "icl")]
    assert stages_run(first) == {"download", "split", "report", *runs}
    report = repo / "report" / "synth" / "report.md"
    assert "| Ours (ICL) |" in report.read_text() and (repo / "report/synth/gallery_resnet50.jpg").is_file()
    assert (repo / "exports/synth/resnet50-icl/model.ts").is_file()
    metrics = dvc(repo, "metrics", "show")
    assert "results/synth/resnet50-icl/metrics.json" in metrics and "maxboxacc_v2" in metrics

    assert stages_run(dvc(repo, "repro")) == set()  # nothing is stale

    settings = yaml.safe_load((repo / "params.yaml").read_text())
    settings["cluster"] = {"address": "ray://head:10001", "storage_path": "s3://bucket/runs"}  # where, not what
    (repo / "params.yaml").write_text(yaml.safe_dump(settings))
    assert "Data and pipelines are up to date" in dvc(repo, "status")

    settings["cluster"] = {"address": None, "storage_path": None}
    settings["evaluate"]["cam_curve_interval"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(settings))
    assert stages_run(dvc(repo, "repro")) == {"evaluate@resnet50-cam", "evaluate@resnet50-icl", "report"}
    assert '"cam_curve_interval": 0.02' in (repo / "results/synth/resnet50-cam/metrics.json").read_text()

    settings["method_settings"]["icl"]["margin"] = 0.5  # one method's setting retrains that method only
    (repo / "params.yaml").write_text(yaml.safe_dump(settings))
    assert set(re.findall(r"^(\S+):", dvc(repo, "status"), re.M)) == {"train@resnet50-icl"}
