"""params.yaml is read one way everywhere (YAML 1.2, as DVC reads it), and a key written twice is an error."""

import shutil
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.params_file import apply_fragment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path) -> Path:
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    return target


def test_a_key_written_twice_is_refused_naming_the_file_line_and_key(params_file):
    lines = params_file.read_text().splitlines()
    line = next(number for number, text in enumerate(lines, start=1) if text.startswith("dataset:")) + 1
    lines.insert(line - 1, "dataset: cub")
    params_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"params\.yaml:{line}:1: not valid YAML: found duplicate key \"dataset\""):
        load_config(params_file)


def test_a_fragment_with_a_key_twice_is_refused_and_params_stay_as_they_were(tmp_path, params_file):
    before = params_file.read_text()
    (tmp_path / "twice.yaml").write_text("train:\n  momentum: 0.9\n  momentum: 0.5\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml:3:3: not valid YAML: found duplicate key \"momentum\""):
        apply_fragment(tmp_path / "twice.yaml", params_file)
    assert params_file.read_text() == before


def test_what_params_apply_accepts_is_what_every_stage_reads(tmp_path, params_file):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string and `on` as true; YAML 1.2 (DVC, ruamel) as 0.001 and "on".
    (tmp_path / "fragment.yaml").write_text("backbone_settings:\n  resnet18:\n    lr: 1e-3\n"
                                            "    pretrained: on\n")
    apply_fragment(tmp_path / "fragment.yaml", params_file)
    settings = load_config(params_file).backbone_settings.of("resnet18")
    assert settings.lr == 0.001
    assert settings.pretrained == "on"
