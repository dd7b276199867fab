"""Hyperparameter search on train-fullsup, the full supervision the protocol allows for it.

Ray Tune samples the ``tune.space`` of params.yaml for one (backbone, method); each trial is a
training run on Ray Train (its own run identity and MLflow child run under one parent run) that
reports val localization (MaxBoxAccV2, or PxAP) each epoch; ASHA stops the weak trials early. The
best trial's values are written as a params.yaml fragment::

    tuning/<dataset>-<backbone>-<method>.yaml

and printed as the ``dvc exp run -S ...`` command that runs the benchmark with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline.config import Config, validate
from pipeline.paths import Layout, run_name
from pipeline.tracking import client_for, experiment_id, open_run
from pipeline.train.driver import ensure_ray, fit, storage_path

log = logging.getLogger("pipeline.tune")

METRIC = "val_localization"


def setting_path(key: str, backbone: str, method: str) -> str:
    """The dotted params.yaml key a search dimension sets for this (backbone, method)."""
    if key == "lr":
        return f"backbone_settings.{backbone}.lr"
    if method == "icl":
        return f"method_settings.icl.hyper.{backbone}.{key}"
    if method == "adl" and key in ("drop_rate", "gamma_fg"):
        return "method_settings.adl." + ("drop_rate" if key == "drop_rate" else "threshold")
    raise ValueError(f"tune.space.{key}: does not apply to method {method!r} (icl takes drop_rate, gamma_fg, "
                     "gamma_bg and lr; adl takes drop_rate, gamma_fg (its threshold) and lr; others lr)")


def with_values(config: Config, values: dict[str, float]) -> Config:
    """The config with dotted keys set, validated again."""
    data = config.model_dump(mode="json")
    for dotted, value in values.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return validate(data, "params.yaml with tuned values")


def nested(values: dict[str, float]) -> dict:
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
    best: dict[str, float]  # dotted params.yaml key -> value
    score: float
    trials: int
    path: Path

    @property
    def dvc_command(self) -> str:
        return "dvc exp run " + " ".join(f"-S '{k}={v:.6g}'" for k, v in self.best.items())


def search(config: Config, layout: Layout, backbone: str, method: str) -> TuneOutcome:
    settings = config.tune
    paths = {key: setting_path(key, backbone, method) for key in settings.space}
    space = {key: (tune.loguniform if r.log else tune.uniform)(r.low, r.high) for key, r in settings.space.items()}
    name = f"tune-{config.dataset}-{run_name(backbone, method)}"
    client = client_for(layout)
    parent = open_run(client, experiment_id(client, config.dataset, layout), name,
                      f"{name}-{settings.seed}-{settings.num_samples}", {f"tune.{k}": str(v) for k, v in settings.space.items()},
                      {"backbone": backbone, "method": method})

    def trial(sample: dict) -> None:
        trial_config = with_values(config, {paths[k]: v for k, v in sample.items()})
        trained = fit(trial_config, layout, backbone, method, parent_run_id=parent, callbacks=[TuneReportCallback()])
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
    values = {paths[k]: float(v) for k, v in best.config.items()}
    score = float(best.metrics_dataframe[METRIC].max())
    out = layout.root / "tuning" / f"{config.dataset}-{run_name(backbone, method)}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# wsol tune: best of {len(results)} trials on {config.dataset} train-fullsup, "
              f"{backbone}-{method}: val localization {score:.2f}\n")
    out.write_text(header + yaml.safe_dump(nested(values), sort_keys=False))
    experiment = experiment_id(client, config.dataset, layout)
    for child in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"):
        client.set_terminated(child.info.run_id, status="KILLED")  # stopped early by ASHA
    client.set_terminated(parent, status="FINISHED")
    outcome = TuneOutcome(values, score, len(results), out)
    log.info("best val localization %.2f with %s; written to %s\nrun the benchmark with it: %s",
             score, values, out, outcome.dvc_command)
    return outcome
