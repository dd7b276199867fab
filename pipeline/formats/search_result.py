"""The protocol's search for one backbone x method on a dataset's train-fullsup, as the search stage
writes it and the train stage and the report read it
(``searches/<dataset>/<backbone>-<method>.json``, :meth:`pipeline.dag.paths.Layout.search`).

``values`` are the best trial's settings as dotted params.yaml keys, all under the method's own section
(``method_settings.<method>.``): its optimiser override on this backbone (lr, weight decay, decay
period, and ``source`` naming the search) and its searched settings. A method that does not search
(``method_settings.<method>.search.trials`` 0) has a result of no trials and no values: its run
trains with params.yaml's. A file may come from anyone: it can set nothing outside its method's section.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.formats.records import RecordError, read_record, within
from pipeline.settings.config import DATASETS, Config, with_values
from pipeline.settings.registry import BACKBONES, METHODS

MAX_TRIALS = 10_000  # as method_settings.<method>.search.trials


@dataclass(frozen=True)
class SearchResult:
    dataset: str = field(metadata=within(choices=DATASETS))
    backbone: str = field(metadata=within(choices=BACKBONES))
    method: str = field(metadata=within(choices=METHODS))
    trials: int = field(metadata=within(0, MAX_TRIALS))  # that ran (0: not searched)
    values: dict = field(default_factory=dict)  # dotted params.yaml key -> the best trial's value
    score: float | None = None  # the best trial's val localization (%, the selection metric): None without trials
    mlflow_run_id: str | None = None  # the search's parent run: its trials are its children

    def problems(self) -> Iterator[str]:
        own = f"method_settings.{self.method}."
        for key, value in self.values.items():
            if not key.startswith(own):
                yield f"values: {key}: outside {own[:-1]}, the only section a search sets"
            elif not isinstance(value, (int, float, str)) or isinstance(value, bool):
                yield f"values: {key}: expected a number or a string, got {value!r}"
        if (self.trials == 0) != (self.score is None) or (self.trials == 0) != (not self.values):
            yield "trials: a search with trials has a score and values, one without has neither"


def write_search(path: Path, result: SearchResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")


def read_search(path: Path, dataset: str, backbone: str, method: str) -> SearchResult:
    """The search result at ``path``, which must be of this dataset, backbone and method."""
    result = read_record(SearchResult, path, "run the search stage first (dvc repro)")
    if (result.dataset, result.backbone, result.method) != (dataset, backbone, method):
        raise RecordError(
            f"{path}: the search of {result.dataset} {result.backbone}-{result.method}, not {dataset} {backbone}-{method}")
    return result


def apply_search(config: Config, result: SearchResult, source: str) -> Config:
    """``config`` with the search's chosen values (none without trials)."""
    return with_values(config, result.values, source) if result.values else config
