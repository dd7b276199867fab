"""The protocol's search on train-fullsup, the full supervision it allows for choosing settings.

Ray Tune samples, for one (backbone, method), the method's optimiser on that backbone (lr, weight
decay, decay period: ``tune.lr``, ``tune.weight_decay``, ``tune.lr_decay_epochs``, set as
``method_settings.<method>.optimiser.<backbone>``) and its own settings
(``method_settings.<method>.search.space``, the keys its registry entry declares searchable); each
trial is a training run on Ray Train (its own run identity and MLflow child run under one parent run)
that reports val localization (MaxBoxAccV2, or PxAP) each epoch; ASHA stops the weak trials early.

The DAG's ``search@<backbone>-<method>`` stage (stages/search.py) writes the best trial's values as
``searches/<dataset>/<backbone>-<method>.json`` (pipeline/formats/search_result.py), which that run's
training applies; ``wsol tune`` writes them as a params.yaml fragment::

    tuning/<dataset>-<backbone>-<method>.yaml

and prints the ``dvc exp run -S ...`` command that runs the benchmark with them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline.dag.paths import Layout, run_name
from pipeline.dag.tracking import SETTINGS_TAG, client_for, experiment_id, open_run
from pipeline.settings import yaml_io
from pipeline.settings.config import Config, dotted_steps, with_values
from pipeline.settings.registry import METHODS
from pipeline.settings.sections import Range
from pipeline.train.driver import ensure_ray, fit, run_settings, settings_hash, storage_path
from pipeline.train.worker import SELECTION as METRIC

log = logging.getLogger("pipeline.tune")
OPTIMISER_DIMENSIONS = ("lr", "weight_decay", "lr_decay_epochs")  # tune's ranges, each method's override


def search_space(config: Config, backbone: str, method: str) -> dict[str, tuple[str, Range]]:
    """Each search dimension of this (backbone, method): its name -> (the dotted params.yaml key it
    sets, its range): the method's optimiser override on this backbone, then its own settings."""
    override = f"method_settings.{method}.optimiser.{backbone}"
    dimensions = {key: (f"{override}.{key}", getattr(config.tune, key)) for key in OPTIMISER_DIMENSIONS}
    for key, dimension in getattr(config.method_settings, method).search.space.items():
        dimensions[key] = (METHODS[method].tunable[key].format(backbone=backbone), dimension)
    return dimensions


def _domain(dimension: Range):
    if dimension.integer:
        sample = tune.lograndint if dimension.log else tune.randint
        return sample(int(dimension.low), int(dimension.high) + 1)  # upper bound exclusive
    return (tune.loguniform if dimension.log else tune.uniform)(dimension.low, dimension.high)


def resolve(sample: dict, dimensions: dict[str, tuple[str, Range]]) -> dict[str, int | float]:
    """Tune's draw as params.yaml values (dotted key -> value): a dimension ``below`` another,
    drawn on its own range [low, high], is mapped linearly onto [low, min(high, the other's value)]."""
    values: dict[str, int | float] = {}
    for key, value in sample.items():
        path, dimension = dimensions[key]
        if dimension.integer:
            values[path] = int(value)
            continue
        value = float(value)
        if dimension.below is not None:
            ceiling = min(dimension.high, float(sample[dimension.below]))
            value = dimension.low + (value - dimension.low) * max(ceiling - dimension.low, 0) / (dimension.high - dimension.low)
        values[path] = value
    return values


def settings_of(config: Config, values: Mapping[str, object]) -> dict[str, object]:
    """The params.yaml settings holding these dotted keys, as they are in ``config``: a key into a
    list (SPG's thresholds) gives the whole list, the unit a params fragment or ``dvc exp run -S`` sets."""
    data: Any = config.model_dump(mode="json")
    out: dict[str, object] = {}
    for dotted in values:
        steps = dotted_steps(dotted)
        cut = next((i for i, step in enumerate(steps) if isinstance(step, int)), len(steps))
        node = data
        for step in steps[:cut]:
            node = node[step]
        out[".".join(map(str, steps[:cut]))] = node
    return out


def nested(values: dict[str, object]) -> dict:
    out: dict = {}
    for dotted, value in values.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


@dataclass(frozen=True)
class Searched:
    """A search's best trial: its values as dotted params.yaml keys (the method's optimiser override on
    the backbone, its ``source`` naming the search, and the method's searched settings) and its val
    localization score (%)."""

    values: dict[str, object]
    score: float
    trials: int
    mlflow_run_id: str  # the search's parent run; its trials are its children


def _end_trial_runs(client, experiment: str, parent: str, errors: Mapping[str, BaseException | None]) -> None:
    """Give each trial's MLflow child run the status Tune decided: FAILED for a trial that raised,
    KILLED for one ASHA stopped early. The trial's own ending cannot say which: a stop kills its
    Ray Train controller, and the trial may see that as an error before it is itself ended."""
    for child in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'"):
        error = errors.get(child.data.tags.get(SETTINGS_TAG, ""))
        if error is not None:
            client.set_terminated(child.info.run_id, status="FAILED")
        elif child.info.status != "FINISHED":
            client.set_terminated(child.info.run_id, status="KILLED")


def only_pair(config: Config, backbone: str, method: str) -> Config:
    """The config running this pair alone, so that an override drawn for it is valid whatever pairs
    the params run (``wsol tune`` may search any)."""
    return with_values(config, {"backbones": [backbone], "methods": [method]}, f"params.yaml, {backbone}-{method} only")


def _key(config: Config, backbone: str, method: str, trials: int) -> str:
    """What a search computes from: the base run's settings, tune's, the number of trials (a search
    rerun with all of them equal continues its MLflow parent run)."""
    what = [run_settings(config, backbone, method, config.tune.seed), config.tune.model_dump(mode="json"), trials]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def search(config: Config, layout: Layout, backbone: str, method: str, trials: int, kind: str) -> Searched:
    """Run ``trials`` trials for (backbone, method) on train-fullsup; ``kind`` ("search", "tune")
    starts the name of the MLflow parent run."""
    settings = config.tune
    config = only_pair(config, backbone, method)
    dimensions = search_space(config, backbone, method)
    space = {key: _domain(dimension) for key, (_, dimension) in dimensions.items()}
    seed = settings.seed  # trials differ by their settings only
    name = f"{kind}-{config.dataset}-{run_name(backbone, method, seed)}"
    source = f"method_settings.{method}.optimiser.{backbone}.source"
    client = client_for(layout)
    parent = open_run(client, experiment_id(client, config.dataset, layout), name,
                      f"{name}-{_key(config, backbone, method, trials)}",
                      {f"search.{k}": str(dimension) for k, (_, dimension) in dimensions.items()} | {"search.trials": str(trials)},
                      {"backbone": backbone, "method": method}, layout.root)

    def values_of(sample: dict, origin: str) -> dict[str, object]:
        return {**resolve(sample, dimensions), source: origin}

    def trial_config(sample: dict) -> Config:
        return with_values(config, values_of(sample, f"a search trial on {config.dataset} train-fullsup"),
                           f"a search trial of {backbone}-{method}")

    def trial(sample: dict) -> None:
        trained = fit(trial_config(sample), layout, backbone, method, seed, parent_run_id=parent,
                      callbacks=[TuneReportCallback()])
        client_for(layout).set_terminated(trained.mlflow_run_id, status="FINISHED")

    # A local Ray gets room for each concurrent trial's driver and workers, and one trial more:
    # Ray Train releases a finished run's resources lazily.
    ensure_ray(config, local_cpus=(1 + config.ray.num_workers * config.ray.cpus_per_worker) * (settings.max_concurrent + 1))
    epochs = config.backbone_settings.of(backbone).epochs
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=trials,
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(settings.grace_period, epochs)),
            # the generator's own limit: Tune ignores max_concurrent_trials once a search algorithm is given,
            # and unlimited trial drivers would hold every CPU their training workers need
            search_alg=BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.max_concurrent)),
        run_config=tune.RunConfig(name=f"{name}-{_key(config, backbone, method, trials)}",
                                  storage_path=storage_path(config, layout)))
    results = tuner.fit()
    best = results.get_best_result(metric=METRIC, mode="max", scope="all")
    assert best.metrics_dataframe is not None  # every trial reports METRIC
    score = float(best.metrics_dataframe[METRIC].max())
    chosen = values_of(best.config or {}, f"searched: best of {len(results)} trials on {config.dataset} "
                                          f"train-fullsup, val localization {score:.2f}")
    _end_trial_runs(client, experiment_id(client, config.dataset, layout), parent,
                    {settings_hash(trial_config(r.config or {}), backbone, method, seed): r.error
                     for r in (results[i] for i in range(len(results)))})  # ResultGrid indexes, it does not iterate
    client.log_metric(parent, f"best_{METRIC}", score)
    client.set_terminated(parent, status="FINISHED")
    log.info("%s-%s: best val localization %.2f of %d trials with %s", backbone, method, score, len(results), chosen)
    return Searched(chosen, score, len(results), parent)


def write_fragment(config: Config, layout: Layout, backbone: str, method: str, searched: Searched) -> Path:
    """``wsol tune``'s output: the chosen settings as a params.yaml fragment
    (tuning/<dataset>-<backbone>-<method>.yaml); logs the ``dvc exp run`` command that uses them."""
    chosen = with_values(only_pair(config, backbone, method), searched.values, "params.yaml with searched values")
    values = settings_of(chosen, searched.values)
    out = layout.root / "tuning" / f"{config.dataset}-{backbone}-{method}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# wsol tune: {searched.values[f'method_settings.{method}.optimiser.{backbone}.source']}\n"
                   + yaml_io.dump(nested(values)))
    command = "dvc exp run " + " ".join(f"-S '{k}={json.dumps(v)}'" for k, v in values.items())
    log.info("written to %s\nrun the benchmark with it: %s", out, command)
    return out
