"""The configuration files a user edits or applies: params.yaml, the shipped fragments, the cluster
configuration; bad ones are refused with the file, line and key named."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.settings import yaml_io
from pipeline.settings.config import ConfigError, load_config
from pipeline.settings.params_file import apply_fragment
from pipeline.settings.registry import FREE_CHOICES, METHODS
from tests.helpers import params

ROOT = Path(__file__).resolve().parents[1]


def test_the_cluster_config_is_one_the_ray_launcher_accepts():
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = yaml.safe_load((ROOT / "infra" / "cluster.yaml").read_text())
    validate_config(prepare_config(cluster))  # what `ray up` does: defaults filled in, then Ray's schema and checks
    assert cluster["provider"]["type"] == "aws" and cluster["head_node_type"] in cluster["available_node_types"]
    assert cluster["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert cluster["file_mounts"]["/home/ray/wsol"] == "."
    assert any("pip install" in c and "/home/ray/wsol" in c for c in cluster["setup_commands"])
    assert all(t["resources"] == {} and "InstanceType" in t["node_config"] for t in cluster["available_node_types"].values())


def test_the_cluster_listens_for_the_outside_only_through_ssh_and_requires_credentials():
    cluster = yaml.safe_load((ROOT / "infra" / "cluster.yaml").read_text())
    commands = [c for key, value in cluster.items() if key.endswith("_commands") for c in value]
    assert not [c for c in commands if re.search(r"0\.0\.0\.0|--(dashboard-)?host[= ]\s*(::|\[::\])", c)]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # Ray's token auth on every node and process, the token copied from the user's machine
    assert "grep -q RAY_AUTH_MODE ~/.bashrc || echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" == cluster["setup_commands"][0]
    assert cluster["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    # MLflow: on the head's private IP, with basic auth, its password read from a file the user made
    (mlflow,) = [c for c in cluster["head_setup_commands"] if "mlflow server" in c]
    assert "--app-name basic-auth" in mlflow and '--host "${WSOL_HEAD_IP:?}"' in mlflow
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$(cat ~/.wsol/mlflow_password)"' in mlflow
    assert cluster["file_mounts"]["/home/ray/.wsol/mlflow_password"] == "~/.wsol/mlflow_password"
    assert any("MLFLOW_TRACKING_PASSWORD=$(cat ~/.wsol/mlflow_password)" in c for c in cluster["setup_commands"])


def test_the_cluster_sync_leaves_out_outputs_and_no_code():
    """rsync reads an exclude pattern without a leading "/" as a name anywhere in the tree: "data"
    would leave out pipeline/data/ too."""
    cluster = yaml.safe_load((ROOT / "infra" / "cluster.yaml").read_text())
    patterns = cluster["rsync_exclude"]
    assert all(p.startswith("/") for p in patterns), patterns
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    code = [f for f in tracked if f.startswith(("pipeline/", "stages/", "infra/", "tests/", "benchmarks/")) or "/" not in f]
    assert code and not [f for f in code if any(("/" + f).startswith(p + "/") or "/" + f == p for p in patterns)]
    assert {"/data", "/runs", "/exports", "/results", "/ray_results", "/mlflow.db", "/mlartifacts", "/.dvc/cache"} <= set(patterns)


def test_every_shipped_params_file_validates(tmp_path):
    load_config(ROOT / "params.yaml")
    for fragment in sorted((ROOT / "infra" / "params").glob("*.yaml")):
        target = tmp_path / f"{fragment.stem}.yaml"
        shutil.copy(ROOT / "params.yaml", target)
        shutil.copy(ROOT / "sources.yaml", tmp_path)
        apply_fragment(fragment, target)
        config = load_config(target)
        if fragment.stem == "ablation":  # Table 2: every variant beside the full method and ADL
            variants = {m for m, spec in METHODS.items() if spec.variant_of_icl is not None}
            assert {"adl", "icl"} | variants == set(config.methods) and len(variants) == 4 + len(FREE_CHOICES) + 1
        elif fragment.stem == "gpu-smoke":  # the default benchmark on a GPU, in bf16, channels-last
            assert config.ray.use_gpu and config.train.amp == "bf16" and config.train.channels_last
            assert config.methods == load_config(ROOT / "params.yaml").methods
        else:
            assert len(config.backbones) == 3 and len(config.methods) == 7
        assert "# The benchmark's one configuration" in target.read_text()  # comments kept


def test_a_bad_fragment_names_the_key_and_leaves_params_untouched(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    shutil.copy(ROOT / "sources.yaml", tmp_path)
    before = target.read_text()
    (tmp_path / "bad.yaml").write_text("train:\n  lr_classifier_ratio: -1\n  warmup: 3\n")
    with pytest.raises(ConfigError) as error:
        apply_fragment(tmp_path / "bad.yaml", target)
    assert "train.lr_classifier_ratio: Input should be greater than 0" in str(error.value)
    assert "train.warmup: Extra inputs are not permitted" in str(error.value)
    assert target.read_text() == before


def test_malformed_params_files_name_the_file_line_and_key(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text("dataset: synth\nbackbones: [resnet50\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:3:1: not valid YAML"):
        load_config(target)
    data = params(**{"dataset": "mnist", "backbones": ["resnet101"], "evaluate.iou_thresholds": [30, 70]})
    target.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_config(target)
    message = str(error.value)
    assert "dataset: Input should be 'synth', 'cub', 'ilsvrc', 'openimages' or 'custom' (got 'mnist')" in message
    assert "backbones.0: Input should be 'vgg16', 'resnet50', 'resnet18' or 'inception_v3'" in message
    assert "evaluate: Value error, iou_thresholds must contain 50" in message


def test_download_sources_come_from_sources_yaml_and_a_source_in_params_wins(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    shutil.copy(ROOT / "sources.yaml", tmp_path)
    shipped = load_config(target).datasets.cub
    assert shipped.images.checksum == "md5:97eceeb196236b17998738112f37df78" and shipped.fullsup_images.filename == "CUBV2.tar"
    data = yaml_io.read(target)
    data["datasets"]["cub"] = {"images": {"urls": ["https://mirror.example.org/CUB.tgz"], "checksum": None, "filename": "CUB.tgz"}}
    target.write_text(yaml_io.dump(data))
    mirrored = load_config(target).datasets.cub
    assert mirrored.images.urls == ["https://mirror.example.org/CUB.tgz"] and mirrored.fullsup_images == shipped.fullsup_images
    (tmp_path / "sources.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match=r"sources\.yaml: expected a mapping of dataset name -> its sources"):
        load_config(target)
