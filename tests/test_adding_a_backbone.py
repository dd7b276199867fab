"""A newcomer adds a backbone: its own module, one registry entry and its params values, nothing else
(README, "Adding a backbone or a method"). Done here in a copy of the project under git, the way
the README says, then every method that needs no per-backbone values, and the paper's method, train
a step on it and give CAMs."""

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.settings import yaml_io

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''"""MobileNetV3-Small as a WSOL backbone: torchvision's features, each block a tap (not in the paper)."""

import torchvision

from pipeline.models.backbones.base import Backbone, Variant
from pipeline.settings.sections import Architecture

TAPS = ("stem", *(f"block{index}" for index in range(1, 12)), "head")


def mobilenet_v3_small(large_feature_map: bool, architecture: Architecture) -> Backbone:
    """One network for every architecture type; no stride is changed, so ``large_feature_map`` is ignored."""
    net = torchvision.models.mobilenet_v3_small(weights=None)
    del net.avgpool, net.classifier
    stages = [(tap, [net.features[index]]) for index, tap in enumerate(TAPS)]
    return Backbone("mobilenet_v3_small", net, stages, (), ("classifier.",), Variant(architecture, large_feature_map, "he"),
                    lambda key, variant: key)  # the reference has no MobileNet: its names are torchvision's
'''

ENTRY = """    BackboneEntry("mobilenet_v3_small", "MobileNetV3-S", "pipeline.models.backbones.mobilenet:mobilenet_v3_small",
                  _taps(("stem", *(f"block{i}" for i in range(1, 12)), "head"), ()), ("features.",), False),
"""

CHECK = """
import torch
from pipeline.settings.config import load_config
from pipeline.models import build_model

config = load_config("params.yaml")
for method in config.methods:
    model = build_model("mobilenet_v3_small", method, 3, config).train()
    outputs = model(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))
    loss = torch.nn.functional.cross_entropy(outputs["logits"], torch.tensor([0, 1, 2, 0]))
    loss = loss + sum(outputs[term] for term in ("ca", "fc") if term in outputs)
    loss.backward()
    logits, cams = model.eval().cams(torch.randn(2, 3, 64, 64), torch.tensor([-1, 1]))
    assert logits.shape == (2, 3) and cams.shape == (2, 224, 224) and torch.isfinite(cams).all(), method
    print(method, sorted(model.backbone.channels.items())[:2], "ok")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_a_backbone_is_its_module_one_registry_entry_and_its_params_values(tmp_path):
    repo = tmp_path / "project"
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "sources.yaml"):
        shutil.copy(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before")

    (repo / "pipeline/models/backbones/mobilenet.py").write_text(MODULE)
    registry = (repo / "pipeline/settings/registry.py").read_text()
    anchor = "BACKBONES: dict[str, BackboneEntry] = {entry.name: entry for entry in (\n"
    assert anchor in registry
    (repo / "pipeline/settings/registry.py").write_text(registry.replace(anchor, anchor + ENTRY))
    params = yaml_io.read(repo / "params.yaml")
    params["backbones"] = ["mobilenet_v3_small"]
    params["methods"] = ["cam", "has", "cutmix", "icl"]
    params["backbone_settings"]["mobilenet_v3_small"] = {**params["backbone_settings"]["resnet18"], "pretrained": None}
    params["method_settings"]["icl"]["taps"]["mobilenet_v3_small"] = ["block8", "block10", "head"]
    params["method_settings"]["icl"]["hyper"]["mobilenet_v3_small"] = params["method_settings"]["icl"]["hyper"][
        "resnet18"
    ]
    (repo / "params.yaml").write_text(yaml_io.dump(params))

    assert git(repo, "status", "--porcelain").splitlines() == [
        " M params.yaml",
        " M pipeline/settings/registry.py",
        "?? pipeline/models/backbones/mobilenet.py",
    ]
    added, removed = git(repo, "diff", "--numstat", "pipeline/settings/registry.py").split()[:2]
    assert (added, removed) == ("2", "0")  # one entry, two lines
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 4
    assert "('block1', 16)" in result.stdout  # its channels measured on the built network, never written down
