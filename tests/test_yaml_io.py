"""YAML as every reader of this project reads it: aliases counted before the document is built, so a
1 KB alias bomb is refused by name instead of being expanded by whatever walks it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.settings import yaml_io
from pipeline.settings.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def bomb(levels: int, width: int = 10) -> str:
    """``levels`` lists of ``width`` aliases of the list before: width ** levels leaves in a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def size(text: str) -> int:
    return yaml_io.expanded_size(YAML(typ="safe", pure=True).compose(text))


def test_expanded_size_counts_each_alias_as_a_copy_by_hand():
    assert size("a: 1\n") == 3  # the mapping, its key, its value
    # mapping 1 + key a 1 + [1, 2] 3 + key b 1 + [*a, *a] (1 + 3 + 3): 13
    assert size("a: &a [1, 2]\nb: [*a, *a]\n") == 13
    # a merge key's mapping counted where it is merged: 1 + (1 + 3) + (1 + (1 + 1 + 3 + 1 + 1)) = 13
    assert size("base: &base {k: 1}\nvariant: {<<: *base, j: 2}\n") == 13
    assert size(bomb(3)) == 1 + 3 + (1 + 10) + (1 + 10 * 11) + (1 + 10 * 111)
    assert size("") == 0


def test_a_deeply_nested_document_is_refused_by_name_not_with_a_traceback():
    assert size("a: " + "[" * 50 + "]" * 50 + "\n") == 2 + 50
    with pytest.raises(yaml_io.YamlError, match=r"deep\.yaml: nested deeper than"):
        yaml_io.parse("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")


def test_an_alias_bomb_is_refused_before_it_is_built_naming_the_file():
    text = bomb(6)  # 10**6 leaves from 400 bytes: 1 + 6 keys + sum of (10**(i + 2) - 1) / 9 for i < 6
    assert len(text) < 500
    with pytest.raises(yaml_io.YamlError, match=r"bomb\.yaml: its aliases \(\*name\) expand it to 1,234,573 YAML nodes"):
        yaml_io.parse(text, "bomb.yaml")
    assert yaml_io.parse(bomb(4), "small.yaml")["l3"][0][0][0] == ["x"] * 10  # 12,349 nodes: read as before


def test_the_shipped_params_file_is_far_under_the_limit():
    assert size((ROOT / "params.yaml").read_text()) * 20 < yaml_io.MAX_NODES


def test_a_bomb_in_params_or_in_a_fragment_is_refused_by_the_stages_and_by_apply(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    shutil.copy(ROOT / "sources.yaml", tmp_path)
    before = target.read_text()
    bombed = tmp_path / "bombed.yaml"
    bombed.write_text(before + "\nevaluate_bomb:\n" + indented(bomb(6)))
    with pytest.raises(ConfigError, match=r"bombed\.yaml: .* \(an alias bomb\?\)"):
        load_config(bombed)
    fragment = tmp_path / "fragment.yaml"
    fragment.write_text("train:\n" + indented(bomb(6)))
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "params", "apply", str(fragment), "--params", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "fragment.yaml" in result.stderr and "alias bomb" in result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_text() == before


def indented(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())
