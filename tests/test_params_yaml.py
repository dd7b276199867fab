"""params.yaml is read one way everywhere (YAML 1.2, as DVC reads it), and a key written twice is an error."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.settings.config import ConfigError, load_config
from pipeline.settings.params_file import apply_fragment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path) -> Path:
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    shutil.copy(ROOT / "sources.yaml", tmp_path)
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


def _changed_lines(before: str, after: str) -> list[str]:
    """The old lines that params apply replaced (difflib over lines); every other line is byte-equal."""
    import difflib

    matcher = difflib.SequenceMatcher(None, before.splitlines(keepends=True), after.splitlines(keepends=True),
                                      autojunk=False)
    old = before.splitlines(keepends=True)
    return [line for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for line in old[i1:i2]]


def _leaf_keys(fragment, params, prefix=""):
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict) and params[key]:  # an empty one: replaced
            yield from _leaf_keys(value, params[key], f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _get(data, dotted):
    for key in dotted.split("."):
        data = data[key]
    return data


@pytest.mark.parametrize("profile", sorted((ROOT / "infra" / "params").glob("*.yaml")), ids=lambda p: p.stem)
def test_params_apply_leaves_untouched_lines_byte_equal_for_each_profile(params_file, profile):
    from pipeline.settings import yaml_io

    before = params_file.read_text()
    old = yaml_io.parse(before, "params.yaml")
    fragment = yaml_io.read(profile)
    changed = apply_fragment(profile, params_file)
    after = params_file.read_text()
    new = yaml_io.parse(after, "params.yaml")
    load_config(params_file)
    leaves = dict(_leaf_keys(fragment, old))
    assert changed == [key for key, value in leaves.items() if _get(old, key) != value]  # only what changed
    for key, value in leaves.items():
        assert _get(new, key) == value
    names = {key.split(".")[-1] for key in changed}
    replaced = _changed_lines(before, after)
    assert len(after.splitlines()) == len(before.splitlines())  # each value replaced on its own line
    assert len(replaced) == len(changed)
    for line in replaced:  # each replaced line holds one changed key; its trailing comment is kept
        assert line.lstrip().split(":")[0] in names, line
        if "#" in line:
            assert line[line.index("#"):] in after
    assert apply_fragment(profile, params_file) == [] and params_file.read_text() == after  # again: nothing


def test_params_apply_leaves_untouched_lines_byte_equal_with_a_hand_written_fragment(tmp_path, params_file):
    before = params_file.read_text()
    (tmp_path / "fragment.yaml").write_text(
        "dataset: cub\n"                                      # a scalar
        "seeds: [0, 1, 2]\n"                                  # a flow list
        "method_settings:\n"
        "  has: {drop_rate: 0.25, search: {space: {grid_size: {high: 32}}}}\n"  # a scalar, a value deep in a flow mapping
        "  spg:\n    branch_width: {vgg16: 256, resnet50: 512, inception_v3: 256, resnet18: 128}\n"  # a mapping value
        "  icl:\n    margin: 2.0\n"                           # under the anchored mapping (&icl)
        "datasets:\n  ilsvrc:\n    root: /data/imagenet\n"   # null -> value
        "backbone_settings:\n  resnet18:\n    pretrained: null\n"   # value -> null
        "train:\n  momentum: 0.9\n")                          # the same value: not rewritten, not counted
    changed = apply_fragment(tmp_path / "fragment.yaml", params_file)
    width = "method_settings.spg.branch_width"  # a mapping descends into params.yaml's mapping, key by key
    assert changed == ["dataset", "seeds", "method_settings.has.drop_rate", "method_settings.has.search.space.grid_size.high",
                       f"{width}.vgg16", f"{width}.resnet50",
                       f"{width}.inception_v3", f"{width}.resnet18", "method_settings.icl.margin", "datasets.ilsvrc.root", "backbone_settings.resnet18.pretrained"]
    after = params_file.read_text()
    assert _changed_lines(before, after) == [
        "dataset: synth            # synth | cub | ilsvrc | openimages | custom (settings under datasets.<name>)\n",
        "seeds: [0]                # one run of each backbone x method per seed (the report gives mean +- std over seeds)\n",
        "    root: null            # local ImageNet-1k: <root>/train/<wnid>/*.JPEG, <root>/val/*.JPEG (needs a login to get)\n",
        "    pretrained: pretrain\n",
        "    drop_rate: 0.5\n",
        "      space: {grid_size: {low: 4, high: 64, integer: true}, drop_rate: {low: 0.0, high: 1.0}}\n",
        "    branch_width: {vgg16: 512, resnet50: 1024, inception_v3: 512, resnet18: 256}\n",
        "    margin: 1.0           # m of Eq. 3\n",
    ]
    for line in [
        "dataset: cub              # synth | cub | ilsvrc | openimages | custom (settings under datasets.<name>)\n",
        "seeds: [0, 1, 2]          # one run of each backbone x method per seed (the report gives mean +- std over seeds)\n",
        "    root: /data/imagenet  # local ImageNet-1k: <root>/train/<wnid>/*.JPEG, <root>/val/*.JPEG (needs a login to get)\n",
        "    pretrained: null\n",
        "    drop_rate: 0.25\n",
        "      space: {grid_size: {low: 4, high: 32, integer: true}, drop_rate: {low: 0.0, high: 1.0}}\n",
        "    branch_width: {vgg16: 256, resnet50: 512, inception_v3: 256, resnet18: 128}\n",
        "    margin: 2.0           # m of Eq. 3\n",
    ]:
        assert line in after.splitlines(keepends=True)
    assert len(after.splitlines()) == len(before.splitlines())
    config = load_config(params_file)
    assert config.dataset == "cub" and list(config.seeds) == [0, 1, 2]
    from pipeline.settings import yaml_io

    data = yaml_io.read(params_file)
    assert data["backbone_settings"]["resnet18"]["pretrained"] is None
    assert config.datasets.cub.images.filename == "CUB_200_2011.tgz"  # from sources.yaml
    assert data["method_settings"]["icl_no_ca"]["margin"] == 2.0  # the merge key follows its anchor
    assert data["method_settings"]["spg"]["branch_width"]["resnet18"] == 128


def test_params_apply_refuses_a_key_params_yaml_lacks_or_only_inherits_naming_it(tmp_path, params_file):
    before = params_file.read_text()
    (tmp_path / "merged.yaml").write_text("method_settings:\n  icl_no_ca:\n    margin: 3.0\n")
    with pytest.raises(ConfigError, match=r"method_settings\.icl_no_ca\.margin: not written in params\.yaml, "
                                          r"only inherited through a merge key"):
        apply_fragment(tmp_path / "merged.yaml", params_file)
    (tmp_path / "unknown.yaml").write_text("data:\n  workers: 3\n")  # the validator names it, as before
    with pytest.raises(ConfigError, match=r"data\.workers: Extra inputs are not permitted"):
        apply_fragment(tmp_path / "unknown.yaml", params_file)
    assert params_file.read_text() == before


# Each process imports everything, says it is ready, then waits for the go file: both read
# params.yaml within the same few milliseconds.
APPLY_ON_GO = """
import os, sys, time
from pipeline.cli import main
go, fragment, params = sys.argv[1:]
open(f"{fragment}.ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
sys.exit(main(["params", "apply", fragment, "--params", params]))
"""


def wait_for(paths: list[Path], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"not ready: {paths}"
        time.sleep(0.01)


def test_two_applies_at_once_lose_no_update(tmp_path, params_file):
    fragments = {"train.log_every": 7, "report.gallery_images": 5}
    files = []
    for key, value in fragments.items():
        section, name = key.split(".")
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(f"{section}: {{{name}: {value}}}\n")
    for attempt in range(5):
        shutil.copy(ROOT / "params.yaml", params_file)
        go = tmp_path / f"go{attempt}"
        ready = [file.with_name(f"{file.name}.ready") for file in files]
        for path in ready:
            path.unlink(missing_ok=True)
        runs = [subprocess.Popen([sys.executable, "-c", APPLY_ON_GO, str(go), str(file), str(params_file)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for file in files]
        wait_for(ready)
        go.touch()
        outcomes = [(run.wait(timeout=120), *run.communicate()) for run in runs]
        settings = load_config(params_file)
        applied = {"train.log_every": settings.train.log_every, "report.gallery_images": settings.report.gallery_images}
        for (key, value), (status, out, err) in zip(fragments.items(), outcomes, strict=False):
            if status == 0:
                assert applied[key] == value, f"attempt {attempt}: {key} reported applied ({out.strip()}) but lost"
            else:  # refused, saying so: never a silent loss
                assert status == 2 and "changed by another program" in err, err
