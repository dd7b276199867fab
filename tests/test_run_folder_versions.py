"""Run folders outlive code changes: model.json stores the run's own settings with a schema version;
one written before versions existed (tests/fixtures/run_folder_v0/model.json, written by the code of
2026-12-04 from that day's params.yaml) and one of version 1 (tests/fixtures/run_folder_v1/model.json,
that run folder as the code of 2026-12-05 rewrote it, weight decay under train) still load, export and
evaluate; a newer one is refused."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.formats.run_folder import SCHEMA_VERSION, read_meta, read_run
from pipeline.models import build_model
from tests.helpers import make_project

LEGACY = Path(__file__).parent / "fixtures" / "run_folder_v0" / "model.json"
VERSION_1 = Path(__file__).parent / "fixtures" / "run_folder_v1" / "model.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The fixture's dataset (synth, 4 classes), a few images per split."""
    return make_project(
        tmp_path_factory.mktemp("versions"), **{"datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 4}}
    )


def legacy_run(folder: Path, fixture: Path = LEGACY) -> dict:
    """A run folder of a fixture's model.json and weights of the network it describes."""
    folder.mkdir()
    shutil.copy(fixture, folder / "model.json")
    legacy = json.loads(fixture.read_text())
    torch.manual_seed(0)
    settings = read_meta(folder).run_settings
    torch.save(build_model("resnet18", "icl", 4, settings, pretrained=False).state_dict(), folder / "model.pt")
    return legacy


def test_the_fixture_is_the_format_before_versions():
    legacy = json.loads(LEGACY.read_text())
    assert "schema_version" not in legacy and "settings" not in legacy
    assert set(legacy["config"]["backbone_settings"]) == {"vgg16", "resnet50", "inception_v3", "resnet18"}


def test_a_version_0_run_folder_reads_as_its_own_settings(tmp_path):
    legacy = legacy_run(tmp_path / "run")
    meta = read_meta(tmp_path / "run")
    assert meta.schema_version == SCHEMA_VERSION == 2
    assert meta.settings["backbone"] == {
        **legacy["config"]["backbone_settings"]["resnet18"],
        "weight_decay": legacy["config"]["train"]["weight_decay"],
    }
    assert "weight_decay" not in meta.settings["train"]
    assert meta.settings["method"]["hyper"] == {
        "resnet18": legacy["config"]["method_settings"]["icl"]["hyper"]["resnet18"]
    }
    assert meta.settings["method"]["taps"] == {"resnet18": ["layer3.0", "layer4.0", "layer4.1"]}
    assert meta.run_settings.data.crop == legacy["config"]["data"]["crop"] == 80
    run = read_run(tmp_path / "run")
    assert run.model.method.taps == ["layer3.0", "layer4.0", "layer4.1"]


def test_a_version_1_run_folder_reads_with_the_weight_decay_under_backbone(tmp_path):
    version_1 = legacy_run(tmp_path / "v1", VERSION_1)
    assert version_1["schema_version"] == 1 and version_1["settings"]["train"]["weight_decay"] == 1e-4
    assert "weight_decay" not in version_1["settings"]["backbone"]
    legacy_run(tmp_path / "v0")
    assert read_meta(tmp_path / "v1") == read_meta(tmp_path / "v0")  # the same run, read from either version
    broken = {**version_1, "settings": {**version_1["settings"], "train": {"epochs": 2}}}
    (tmp_path / "v1" / "model.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="settings.train.weight_decay: missing"):
        read_meta(tmp_path / "v1")


@pytest.mark.parametrize("fixture", [LEGACY, VERSION_1], ids=["version-0", "version-1"])
def test_an_old_run_folder_exports_and_evaluates(project, tmp_path, fixture):
    legacy_run(tmp_path / "run", fixture)
    params = project.root / "params.yaml"
    assert main(["export", str(tmp_path / "run"), "--params", str(params), "--out", str(tmp_path / "export")]) == 0
    report = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report["method"] == "icl" and report["input_size"] == 80
    assert (
        main(["evaluate", str(tmp_path / "export"), "--params", str(params), "--out", str(tmp_path / "results")]) == 0
    )
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["images"] == 16 and 0 <= metrics["maxboxacc_v2"] <= 100


def test_a_run_folder_of_the_current_version_round_trips(tmp_path):
    legacy_run(tmp_path / "run")
    meta = read_meta(tmp_path / "run")
    (tmp_path / "run" / "model.json").write_text(json.dumps({**json.loads(LEGACY.read_text()), "config": None}))
    with pytest.raises(ValueError, match="config.method_settings.icl: missing"):
        read_meta(tmp_path / "run")
    (tmp_path / "run" / "model.json").write_text(json.dumps(asdict(meta)))
    assert read_meta(tmp_path / "run") == meta


def test_a_newer_schema_version_is_refused_by_name(tmp_path, capsys):
    legacy_run(tmp_path / "run")
    meta = asdict(read_meta(tmp_path / "run"))
    (tmp_path / "run" / "model.json").write_text(json.dumps({**meta, "schema_version": 3}))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"wsol export: error: {tmp_path / 'run' / 'model.json'}: schema_version 3 is newer than this wsol "
        "reads (up to 2): read it with the wsol that wrote it, or update wsol"
    )
    assert not (tmp_path / "out").exists()
