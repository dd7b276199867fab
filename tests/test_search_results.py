"""The search stage's result (searches/<dataset>/<backbone>-<method>.json) as the train stage and the report
read it: the chosen values applied to the method's own section, and a file from anyone refused by name
where it would set anything else, or is not the search of the run that reads it."""

import json

import pytest

from pipeline.dag.paths import Layout
from pipeline.formats.records import RecordError
from pipeline.formats.search_result import SearchResult, apply_search, read_search, write_search
from pipeline.settings.config import ConfigError, Optimiser
from tests.helpers import config

CHOSEN = {"method_settings.adl.optimiser.resnet50.lr": 0.004, "method_settings.adl.optimiser.resnet50.weight_decay": 5e-4,
          "method_settings.adl.optimiser.resnet50.lr_decay_epochs": 3,
          "method_settings.adl.optimiser.resnet50.source": "searched: best of 2 trials",
          "method_settings.adl.drop_rate": 0.4}


@pytest.fixture
def cfg():
    return config(**{"backbones": ["resnet50"], "methods": ["cam", "adl"]})


def test_the_chosen_values_are_what_the_run_trains_with(tmp_path, cfg):
    path = Layout(tmp_path).search("synth", "resnet50", "adl")
    write_search(path, SearchResult("synth", "resnet50", "adl", 2, CHOSEN, 41.5, "abc"))
    assert path == tmp_path / "searches/synth/resnet50-adl.json"
    result = read_search(path, "synth", "resnet50", "adl")
    searched = apply_search(cfg, result, str(path))
    assert searched.optimiser("resnet50", "adl") == Optimiser(0.004, 5e-4, 3, "searched: best of 2 trials")
    assert searched.method_settings.adl.drop_rate == 0.4
    assert searched.optimiser("resnet50", "cam") == cfg.optimiser("resnet50", "cam")  # another method's: as it was
    unsearched = SearchResult("synth", "resnet50", "cam", 0)
    assert apply_search(cfg, unsearched, "x") is cfg


@pytest.mark.parametrize("change, message", [
    ({"values": {**CHOSEN, "dataset": "cub"}}, "values: dataset: outside method_settings.adl, the only section a search sets"),
    ({"values": {**CHOSEN, "method_settings.adlx.lr": 1}}, "values: method_settings.adlx.lr: outside method_settings.adl"),
    ({"values": {**CHOSEN, "method_settings.adl.taps": ["x"]}}, "values: method_settings.adl.taps: expected a number or a string"),
    ({"trials": 0}, "trials: a search with trials has a score and values, one without has neither"),
    ({"trials": -1}, "trials: expected a number in [0, 10000], got -1"),
    ({"score": float("nan")}, "score: expected a finite number or null, got nan"),
    ({"backbone": "vgg16"}, "the search of synth vgg16-adl, not synth resnet50-adl"),
    ({"extra": 1}, "unknown key(s) extra for a SearchResult"),
])
def test_a_bad_search_file_is_refused_naming_it_and_the_field(tmp_path, change, message):
    path = Layout(tmp_path).search("synth", "resnet50", "adl")
    write_search(path, SearchResult("synth", "resnet50", "adl", 2, CHOSEN, 41.5, "abc"))
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(RecordError) as refused:
        read_search(path, "synth", "resnet50", "adl")
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)


def test_a_value_out_of_its_range_is_refused_as_params_are(tmp_path, cfg):
    result = SearchResult("synth", "resnet50", "adl", 2, {**CHOSEN, "method_settings.adl.drop_rate": 1.5}, 41.5)
    with pytest.raises(ConfigError, match=r"searches/x.json: invalid configuration:\n  method_settings.adl.drop_rate"):
        apply_search(cfg, result, "searches/x.json")


def test_a_missing_result_says_which_stage_writes_it(tmp_path):
    with pytest.raises(RecordError, match="resnet50-adl.json is missing: run the search stage first"):
        read_search(Layout(tmp_path).search("synth", "resnet50", "adl"), "synth", "resnet50", "adl")
