"""Run folders outlive code changes: model.json stores the run's own settings with a schema version;
one written before versions existed (tests/fixtures/run_folder_v0/model.json, written by the code of
2026-12-04 from that day's params.yaml) still loads, exports and evaluates; a newer one is refused."""

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


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The fixture's dataset (synth, 4 classes), a few images per split."""
    return make_project(
        tmp_path_factory.mktemp("versions"), **{"datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 4}}
    )


def legacy_run(folder: Path) -> dict:
    """A run folder of the fixture's model.json and weights of the network it describes."""
    folder.mkdir()
    shutil.copy(LEGACY, folder / "model.json")
    legacy = json.loads(LEGACY.read_text())
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
    assert meta.schema_version == SCHEMA_VERSION == 1
    assert meta.settings["backbone"] == legacy["config"]["backbone_settings"]["resnet18"]
    assert meta.settings["method"]["hyper"] == {
        "resnet18": legacy["config"]["method_settings"]["icl"]["hyper"]["resnet18"]
    }
    assert meta.settings["method"]["taps"] == {"resnet18": ["layer3.0", "layer4.0", "layer4.1"]}
    assert meta.run_settings.data.crop == legacy["config"]["data"]["crop"] == 80
    run = read_run(tmp_path / "run")
    assert run.model.method.taps == ["layer3.0", "layer4.0", "layer4.1"]


def test_a_version_0_run_folder_exports_and_evaluates(project, tmp_path):
    legacy_run(tmp_path / "run")
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
    (tmp_path / "run" / "model.json").write_text(json.dumps({**meta, "schema_version": 2}))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"wsol export: error: {tmp_path / 'run' / 'model.json'}: schema_version 2 is newer than this wsol "
        "reads (up to 1): read it with the wsol that wrote it, or update wsol"
    )
    assert not (tmp_path / "out").exists()
