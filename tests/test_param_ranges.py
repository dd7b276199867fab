"""Every number in params.yaml is finite and within a range a real run could need: a value that would
crash, allocate tens of GiB or run for hours is refused on load, naming the file, the key, the value
and the range."""

import math
import shutil

import pytest

from pipeline.cli import main
from pipeline.settings import yaml_io
from pipeline.settings.config import ConfigError, load_config
from pipeline.settings.params_file import apply_fragment
from tests.helpers import PARAMS, params

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("key, value, message", [
    # seeds: NumPy's seed range
    ("seeds", [0, -1], "seeds.1: Input should be greater than or equal to 0 (got -1)"),
    ("seeds", [2**32], "seeds.0: Input should be less than 4294967296 (got 4294967296)"),
    ("datasets.synth.seed", -1, "datasets.synth.seed: Input should be greater than or equal to 0 (got -1)"),
    ("pretrain.seed", -5, "pretrain.seed: Input should be greater than or equal to 0 (got -5)"),
    ("evaluate.bootstrap_seed", -1, "evaluate.bootstrap_seed: Input should be greater than or equal to 0 (got -1)"),
    ("tune.seed", -1, "tune.seed: Input should be greater than or equal to 0 (got -1)"),
    # sizes that allocate or run without bound
    ("evaluate.cam_curve_interval", 1e-9,
     "evaluate.cam_curve_interval: Input should be greater than or equal to 0.0001 (got 1e-09)"),
    ("train.val_cam_curve_interval", 0.9,
     "train.val_cam_curve_interval: Input should be less than or equal to 0.5 (got 0.9)"),
    ("evaluate.bootstrap_samples", 10**9,
     "evaluate.bootstrap_samples: Input should be less than or equal to 10000 (got 1000000000)"),
    ("datasets.synth.images_per_class.train", 10**9,
     "datasets.synth.images_per_class.train: Input should be less than or equal to 5000 (got 1000000000)"),
    ("pretrain.images_per_class", 10**9,
     "pretrain.images_per_class: Input should be less than or equal to 5000 (got 1000000000)"),
    ("data.resize", 100_000, "data.resize: Input should be less than or equal to 1024 (got 100000)"),
    ("data.crop", 4, "data.crop: Input should be greater than or equal to 16 (got 4)"),
    ("data.loader_workers", 10_000, "data.loader_workers: Input should be less than or equal to 64 (got 10000)"),
    ("backbone_settings.resnet18.epochs", 10**6,
     "backbone_settings.resnet18.epochs: Input should be less than or equal to 1000 (got 1000000)"),
    ("backbone_settings.resnet18.batch_size", 10**6,
     "backbone_settings.resnet18.batch_size: Input should be less than or equal to 4096 (got 1000000)"),
    ("evaluate.batch_size", 10**6, "evaluate.batch_size: Input should be less than or equal to 4096 (got 1000000)"),
    ("backbone_settings.resnet18.lr", 100.0,
     "backbone_settings.resnet18.lr: Input should be less than or equal to 10 (got 100.0)"),
    ("ray.num_workers", 10**5, "ray.num_workers: Input should be less than or equal to 1024 (got 100000)"),
    ("tune.num_samples", 10**9, "tune.num_samples: Input should be less than or equal to 10000 (got 1000000000)"),
    ("export.tolerance", 5.0, "export.tolerance: Input should be less than or equal to 1 (got 5.0)"),
    # each method's settings (pipeline/settings/registry.py)
    ("method_settings.icl.margin", 1e6, "method_settings.icl.margin: Input should be less than or equal to 100 (got 1000000.0)"),
    ("method_settings.icl.embedding_dim", 10**7,
     "method_settings.icl.embedding_dim: Input should be less than or equal to 8192 (got 10000000)"),
    ("method_settings.has.grid_size", 10**6, "method_settings.has.grid_size: Input should be less than or equal to 1024 (got 1000000)"),
    # not finite, wherever the number is: each section's, each method's settings, a search range
    ("backbone_settings.resnet18.lr", INF, "backbone_settings.resnet18.lr: must be a finite number (got inf)"),
    ("pretrain.lr", NAN, "pretrain.lr: must be a finite number (got nan)"),
    ("train.weight_decay", NAN, "train.weight_decay: must be a finite number (got nan)"),
    ("train.grad_clip", INF, "train.grad_clip: must be a finite number (got inf)"),
    ("ray.system_metrics_interval", INF, "ray.system_metrics_interval: must be a finite number (got inf)"),
    ("export.tolerance", INF, "export.tolerance: must be a finite number (got inf)"),
    ("method_settings.icl.margin", INF, "method_settings.icl.margin: must be a finite number (got inf)"),
    ("method_settings.cutmix.beta", NAN, "method_settings.cutmix.beta: must be a finite number (got nan)"),
    ("tune.lr.high", INF, "tune.lr.high: must be a finite number (got inf)"),
    ("method_settings.icl.search.space.gamma_fg.low", -INF,
     "method_settings.icl.search.space.gamma_fg.low: must be a finite number (got -inf)"),
])
def test_a_value_out_of_range_is_refused_naming_file_key_value_and_range(tmp_path, key, value, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml_io.dump(params(**{key: value})))  # .inf / .nan as YAML writes them
    with pytest.raises(ConfigError) as error:
        load_config(path)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration:"
    assert f"  {message}" in lines, str(error.value)


def test_every_fault_is_named_once(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml_io.dump(params(**{"backbone_settings.resnet18.lr": INF, "seeds": [-1]})))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).splitlines()[1:] == ["  backbone_settings.resnet18.lr: must be a finite number (got inf)",
                                                 "  seeds.0: Input should be greater than or equal to 0 (got -1)"]


@pytest.mark.parametrize("fragment", sorted(PARAMS.parent.glob("infra/params/*.yaml")), ids=lambda p: p.stem)
def test_the_default_params_and_every_shipped_fragment_applied_are_within_range(tmp_path, fragment):
    for name in ("params.yaml", "sources.yaml"):
        shutil.copy(PARAMS.with_name(name), tmp_path / name)
    load_config(tmp_path / "params.yaml")
    apply_fragment(fragment, tmp_path / "params.yaml")
    load_config(tmp_path / "params.yaml")


@pytest.mark.parametrize("option, value, message", [
    ("--cam-curve-interval", "1e-9", "expected a number in [0.0001, 0.5], got '1e-9'"),
    ("--cam-curve-interval", "nan", "expected a number in [0.0001, 0.5], got 'nan'"),
    ("--bootstrap", "1000000000", "expected at most 10000 resamples, got '1000000000'"),
    ("--batch-size", "100000", "expected at most 4096, got '100000'"),
])
def test_evaluate_scoremaps_options_have_the_params_ranges(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exited:  # before the missing folders are looked for
        main(["evaluate-scoremaps", "--metadata-root", str(tmp_path / "m"), "--scoremap-root", str(tmp_path / "s"),
              option, value])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"wsol evaluate-scoremaps: error: argument {option}: {message}"
