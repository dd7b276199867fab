"""Training one (backbone, method) on Ray Train, from the driver: the run's identity, the cluster,
the MLflow run, and the stage's outputs.

A run is named ``<dataset>-<backbone>-<method>-<identity>``, the identity a hash of everything that
determines its result: the settings it reads, the pipeline's code and the dataset's metadata. So a
stage killed half way and run again has the same name, and Ray Train resumes it from its last
checkpoint; a changed setting, code or dataset starts a new run. (Delete ``ray_results/<name>`` to
retrain an unchanged run from scratch.)

Ray: a local instance that listens on loopback only and dies with the stage (``start_local_ray``),
or the cluster at ``cluster.address`` (``$RAY_ADDRESS`` overrides it), whose workers log to MLflow
at an address of the driver's node they can reach (``reachable_uri``). A cluster address where nothing
accepts a connection within CONNECT_TIMEOUT_S is an error naming it (``probe_cluster``), where
``ray.init`` would retry silently for minutes; the run's MLflow run is then FAILED, as after any error.
Checkpoints: ``ray_results/`` in the project, or ``cluster.storage_path`` (``$WSOL_RAY_STORAGE``
overrides it), a shared filesystem or cloud URI as multi-node runs need. Neither makes a stage
stale or changes a run's identity, so moving to a cluster retrains nothing. Once the run's model is
a stage output, its checkpoints are pruned to what a rerun of the finished run needs
(``prune_checkpoints``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import ray
import ray.train
import torch
from ray._private import ray_constants
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import pipeline
from pipeline.dag.code_deps import identity_code
from pipeline.dag.paths import Layout, run_name
from pipeline.dag.tracking import (
    SETTINGS_TAG,
    client_for,
    ended_on_error,
    experiment_id,
    flatten,
    log_dataset_inputs,
    open_run,
    reachable_uri,
    set_tags,
    tracking_uri,
)
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.errors import PipelineError
from pipeline.models import pretrained_source
from pipeline.report.colours import RUN_COLOUR_TAG, method_colour
from pipeline.settings.config import PRETRAIN_STAGE, Config
from pipeline.train import ray_guard
from pipeline.train import state as saved
from pipeline.train.state import TrainingState, final_weights
from pipeline.train.worker import WorkerPayload, train_worker

log = logging.getLogger("pipeline.train")

STORAGE_ENV = "WSOL_RAY_STORAGE"
CONNECT_TIMEOUT_S = 10.0  # a cluster's head accepting no TCP connection in this long is taken for dead

_guard: subprocess.Popen | None = None


class TrainingError(PipelineError, RuntimeError):
    """Training failed on the workers after every allowed restart; the message carries their errors."""


class ClusterError(PipelineError, ConnectionError):
    """The configured Ray cluster cannot be reached; the message names its address and where it was set."""


@dataclass
class TrainedRun:
    backbone: str
    method: str
    seed: int
    state_dict: dict
    progress: TrainingState
    info: DatasetInfo
    mlflow_run_id: str
    ray_name: str
    select: str  # train.select: "last" or "best"
    result: ray.train.Result  # Ray Train's: where the run's checkpoints are

    @property
    def selected_epoch(self) -> int:
        return self.progress.best_epoch if self.select == "best" else self.progress.epoch

    @property
    def selected(self) -> dict[str, float]:
        """The metrics of the exported epoch."""
        return self.progress.history[self.selected_epoch - 1]


def run_settings(config: Config, backbone: str, method: str, seed: int) -> dict:
    """The settings a training run reads: its MLflow params, and part of its identity. A method's
    per-backbone settings (taps, Table 1's hyperparameters) are this backbone's only."""
    return {
        "dataset": config.dataset, "backbone": backbone, "method": method, "seed": seed,
        "data": config.data.model_dump(), "train": config.train.model_dump(),
        "backbone_settings": config.backbone_settings.of(backbone).model_dump(),
        "method_settings": getattr(config.method_settings, method).for_backbone(backbone),
        "ray": config.ray.model_dump(include={"num_workers", "use_gpu", "cpus_per_worker"}),
    }


def settings_hash(config: Config, backbone: str, method: str, seed: int) -> str:
    """A hash of the run's settings alone (its identity also hashes code and data)."""
    return hashlib.sha256(json.dumps(run_settings(config, backbone, method, seed), sort_keys=True).encode()).hexdigest()[:12]


def _add_files(digest, base: Path, paths) -> None:
    for path in sorted(paths):
        digest.update(path.relative_to(base).as_posix().encode() + path.read_bytes())


def run_identity(config: Config, backbone: str, method: str, seed: int, info: DatasetInfo, layout: Layout) -> str:
    """A hash of the run's settings, the code that computes its result (its workers' code
    fingerprint, pipeline/dag/code_deps.py: its own backbone's and method's code and entries, not the
    figures, tracking or outputs, which the train stage may redo without retraining), the dataset
    folder's metadata and the pretrain stage's weights it starts from."""
    digest = hashlib.sha256(settings_hash(config, backbone, method, seed).encode())
    digest.update(identity_code(backbone, method, Path(pipeline.__file__).parent.parent).encode())
    _add_files(digest, info.folder, [p for p in info.folder.rglob("*") if p.is_file()])
    if config.backbone_settings.of(backbone).pretrained == PRETRAIN_STAGE:
        source = pretrained_source(config.backbone_settings.of(backbone), backbone, layout.pretrained(backbone))
        assert source is not None  # the pretrain stage's weights file
        _add_files(digest, layout.root, [Path(source)])
    return digest.hexdigest()[:12]


def cluster_address(config: Config) -> str | None:
    return os.environ.get("RAY_ADDRESS") or config.cluster.address


def probe_cluster(address: str, source: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`ClusterError` unless the head at ``address`` (``host:port`` of its GCS, or
    ``ray://host:port`` of its Ray Client server), set in ``source``, accepts a TCP connection within
    ``timeout`` seconds. Addresses Ray resolves itself ("auto") are left to it."""
    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError as error:
        raise ClusterError(f"Ray cluster address {address!r} ({source}) is not host:port: {error}") from None
    if host is None or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or error
        raise ClusterError(f"Ray cluster at {address} ({source}): no connection within {timeout:g} s ({reason}); "
                           "is the cluster up, and is this its head's address?") from None


def start_local_ray(num_cpus: int) -> None:
    """Start a Ray for this process alone: a new instance (never one ``ray start`` left running),
    its servers bound to loopback, and a guard that kills its processes once this one is gone."""
    global _guard
    # Ray binds its servers to all interfaces unless the node's IP is loopback, which ray.init keeps
    # only where Ray believes clusters unsupported (services.get_node_ip_address reads
    # ray_constants.ENABLE_RAY_CLUSTER, $RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import). Once started,
    # the node's processes and workers use the IP it was given.
    # Ray turns token auth on by default for a new local instance and says so at WARNING on every start;
    # this Ray is loopback-only and ours, so that line is noise in every train stage.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Ray Train watches for node preemption with an actor that logs an error-level line as it starts; a
    # local Ray has no preemptible node. Its processes inherit this process's environment.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    with mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        # The dashboard serves the state API that Ray Train's placement-group cleaner polls (without it,
        # a warning every few seconds); on loopback, like everything else here.
        ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", logging_level=logging.WARNING)
    if _guard is not None:  # one guard, aware of every Ray this process started
        _guard.kill()
        _guard.wait()
    _guard = subprocess.Popen([sys.executable, "-m", "pipeline.train.ray_guard"], stdout=subprocess.PIPE,
                              start_new_session=True)
    assert _guard.stdout is not None  # stdout=PIPE
    started = _guard.stdout.readline() == ray_guard.READY
    _guard.stdout.close()
    if not started:
        raise RuntimeError("the local Ray's guard process did not start (is psutil installed?)")


def ensure_ray(config: Config, local_cpus: int | None = None) -> None:
    """Join the configured cluster, or start a local Ray with ``local_cpus`` logical CPUs (default:
    this machine's, at least the run's)."""
    if ray.is_initialized():
        return
    address = cluster_address(config)
    if address:
        probe_cluster(address, "$RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "cluster.address")
        ray.init(address=address)
        return
    needed = config.ray.num_workers * config.ray.cpus_per_worker
    start_local_ray(local_cpus or max(needed, os.cpu_count() or 1))


def storage_path(config: Config, layout: Layout) -> str:
    return os.environ.get(STORAGE_ENV) or config.cluster.storage_path or str(layout.ray_storage)


def fit(config: Config, layout: Layout, backbone: str, method: str, seed: int, *, parent_run_id: str | None = None,
        callbacks: list | None = None) -> TrainedRun:
    """Train (or resume, or reuse a finished run of the same identity) and return the selected weights."""
    info = DatasetInfo.load(layout.split(config.dataset))
    identity = run_identity(config, backbone, method, seed, info, layout)
    name = run_name(backbone, method, seed)
    ray_name = f"{config.dataset}-{name}-{identity}"
    client = client_for(layout)
    tags = {"wsol.ray_run": ray_name, SETTINGS_TAG: settings_hash(config, backbone, method, seed),
            "dataset": config.dataset, "backbone": backbone, "method": method, "seed": str(seed),
            RUN_COLOUR_TAG: method_colour(method)}  # the method's colour in MLflow's charts, as in the report
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    run_id = open_run(client, experiment_id(client, config.dataset, layout), f"{config.dataset}-{name}",
                      identity, flatten(run_settings(config, backbone, method, seed)), tags, layout.root, parent_run_id)
    with ended_on_error(client, run_id, layout):  # FAILED on any error from here on
        log_dataset_inputs(client, run_id, info, {"train": "training", "val": "validation"}, layout)
        ensure_ray(config)
        uri = tracking_uri(layout)
        if cluster_address(config):  # rank 0 may run on another node
            uri = reachable_uri(uri, ray.util.get_node_ip_address())
        payload = WorkerPayload(config=config.model_dump(mode="json"), backbone=backbone, method=method, seed=seed,
                                dataset_folder=str(info.folder), pretrained_folder=str(layout.pretrained(backbone)),
                                prepared_folder=str(layout.prepared(config.dataset)), mlflow_tracking_uri=uri,
                                mlflow_run_id=run_id)
        trainer = TorchTrainer(
            train_worker, train_loop_config=asdict(payload),
            scaling_config=ScalingConfig(num_workers=config.ray.num_workers, use_gpu=config.ray.use_gpu,
                                         resources_per_worker={"CPU": config.ray.cpus_per_worker}),
            run_config=RunConfig(name=ray_name, storage_path=storage_path(config, layout),
                                 failure_config=FailureConfig(max_failures=config.ray.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=config.ray.keep_checkpoints),
                                 callbacks=callbacks))
        log.info("training %s (MLflow run %s)", ray_name, run_id)
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as error:
            raise TrainingError(f"{ray_name}: training failed after {config.ray.max_failures} allowed restart(s): {error}") from None
        if result.checkpoint is None:
            raise TrainingError(f"{ray_name}: training ended without a checkpoint")
        with result.checkpoint.as_directory() as folder:
            weights, progress = final_weights(Path(folder), config.train.select)
        set_tags(client, run_id, {"wsol.restarts": str(progress.restarts)})
    return TrainedRun(backbone, method, seed, weights, progress, info, run_id, ray_name, config.train.select, result)


def prune_checkpoints(trained: TrainedRun) -> None:
    """Cut the Ray checkpoints Ray keeps of a finished run (``ray.keep_checkpoints``) to its weights
    and history, without the optimizer, scheduler and scaler state: what a rerun of the finished run
    resumes from. Ray's run snapshot lists each kept checkpoint, so none is deleted. Call it once the
    run's model is a stage output. Works on any storage Ray writes to."""
    for checkpoint, _ in trained.result.best_checkpoints or []:
        with checkpoint.as_directory() as folder:
            finished = saved.finished(Path(folder) / saved.STATE)
        with checkpoint.filesystem.open_output_stream(f"{checkpoint.path}/{saved.STATE}") as stream:
            torch.save(finished, stream)
