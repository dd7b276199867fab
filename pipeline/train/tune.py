"""Hyperparameter search on train-fullsup, the full supervision the protocol allows for it.

Ray Tune samples, for one (backbone, method), the learning rate (``tune.lr``) and the method's own
settings (``tune.space.<method>``, the keys its registry entry declares searchable); each trial is
a training run on Ray Train (its own run identity and MLflow child run under one parent run) that
reports val localization (MaxBoxAccV2, or PxAP) each epoch; ASHA stops the weak trials early. The
best trial's values are written as a params.yaml fragment::

    tuning/<dataset>-<backbone>-<method>.yaml

and printed as the ``dvc exp run -S ...`` command that runs the benchmark with them.
"""

from __future__ import annotations

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
from pipeline.settings.config import Config, Range, validate
from pipeline.settings.registry import METHODS
from pipeline.train.driver import ensure_ray, fit, settings_hash, storage_path
from pipeline.train.worker import SELECTION as METRIC

log = logging.getLogger("pipeline.tune")


def search_space(config: Config, backbone: str, method: str) -> dict[str, tuple[str, Range]]:
    """Each search dimension of this (backbone, method): its name -> (the dotted params.yaml key it
    sets, its range). The learning rate is the method's override where it has one on this backbone
    (``method_settings.<method>.optimiser.<backbone>.lr``: the value its run reads), else the backbone's."""
    override = getattr(config.method_settings, method).optimiser.get(backbone)
    lr = f"method_settings.{method}.optimiser.{backbone}.lr" if override is not None and override.lr is not None \
        else f"backbone_settings.{backbone}.lr"
    dimensions = {"lr": (lr, config.tune.lr)}
    for key, dimension in config.tune.space.get(method, {}).items():
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


def _steps(dotted: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in dotted.split(".")]


def with_values(config: Config, values: Mapping[str, object]) -> Config:
    """The config with dotted keys set (a number indexes a list), validated again."""
    data: Any = config.model_dump(mode="json")
    for dotted, value in values.items():
        *parents, last = _steps(dotted)
        node = data
        for step in parents:
            node = node[step]
        node[last] = value
    return validate(data, "params.yaml with tuned values")


def settings_of(config: Config, values: Mapping[str, object]) -> dict[str, object]:
    """The params.yaml settings holding these dotted keys, as they are in ``config``: a key into a
    list (SPG's thresholds) gives the whole list, the unit a params fragment or ``dvc exp run -S`` sets."""
    data: Any = config.model_dump(mode="json")
    out: dict[str, object] = {}
    for dotted in values:
        steps = _steps(dotted)
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
class TuneOutcome:
    best: dict[str, object]  # dotted params.yaml key -> value
    score: float
    trials: int
    path: Path

    @property
    def dvc_command(self) -> str:
        return "dvc exp run " + " ".join(f"-S '{k}={json.dumps(v)}'" for k, v in self.best.items())


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


def search(config: Config, layout: Layout, backbone: str, method: str) -> TuneOutcome:
    settings = config.tune
    dimensions = search_space(config, backbone, method)
    space = {key: _domain(dimension) for key, (_, dimension) in dimensions.items()}
    seed = config.seeds[0]  # trials differ by their settings only: each trains with the first seed
    name = f"tune-{config.dataset}-{run_name(backbone, method, seed)}"
    client = client_for(layout)
    parent = open_run(client, experiment_id(client, config.dataset, layout), name,
                      f"{name}-{settings.seed}-{settings.num_samples}",
                      {f"tune.{k}": str(dimension) for k, (_, dimension) in dimensions.items()},
                      {"backbone": backbone, "method": method}, layout.root)

    def trial(sample: dict) -> None:
        trial_config = with_values(config, resolve(sample, dimensions))
        trained = fit(trial_config, layout, backbone, method, seed, parent_run_id=parent, callbacks=[TuneReportCallback()])
        client_for(layout).set_terminated(trained.mlflow_run_id, status="FINISHED")

    # A local Ray gets room for each concurrent trial's driver and workers, and one trial more:
    # Ray Train releases a finished run's resources lazily.
    ensure_ray(config, local_cpus=(1 + config.ray.num_workers * config.ray.cpus_per_worker) * (settings.max_concurrent + 1))
    epochs = config.backbone_settings.of(backbone).epochs
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=settings.num_samples,
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(settings.grace_period, epochs)),
            # the generator's own limit: Tune ignores max_concurrent_trials once a search algorithm is given,
            # and unlimited trial drivers would hold every CPU their training workers need
            search_alg=BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.max_concurrent)),
        run_config=tune.RunConfig(name=name, storage_path=storage_path(config, layout)))
    results = tuner.fit()
    best = results.get_best_result(metric=METRIC, mode="max", scope="all")
    tuned = resolve(best.config or {}, dimensions)
    values = settings_of(with_values(config, tuned), tuned)
    assert best.metrics_dataframe is not None  # every trial reports METRIC
    score = float(best.metrics_dataframe[METRIC].max())
    out = layout.root / "tuning" / f"{config.dataset}-{backbone}-{method}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# wsol tune: best of {len(results)} trials on {config.dataset} train-fullsup, "
              f"{backbone}-{method}: val localization {score:.2f}\n")
    out.write_text(header + yaml_io.dump(nested(values)))
    _end_trial_runs(client, experiment_id(client, config.dataset, layout), parent,
                    {settings_hash(with_values(config, resolve(r.config or {}, dimensions)), backbone, method, seed): r.error
                     for r in (results[i] for i in range(len(results)))})  # ResultGrid indexes, it does not iterate
    client.set_terminated(parent, status="FINISHED")
    outcome = TuneOutcome(values, score, len(results), out)
    log.info("best val localization %.2f with %s; written to %s\nrun the benchmark with it: %s",
             score, values, out, outcome.dvc_command)
    return outcome
