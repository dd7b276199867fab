"""MLflow: one run per training run, under one experiment per dataset.

The store is ``$MLFLOW_TRACKING_URI`` when set (a tracking server for multi-node runs, serving the
artifacts), else a SQLite database in the project root (``mlflow.db``, MLflow 3's default backend)
with artifacts in ``mlartifacts/<experiment>/``. That folder is recorded *relative* to the project
root, so a moved or copied project reads its own artifacts: MLflow resolves it against the working
directory, which is the root for every stage (DVC runs them there), for ``mlflow ui`` started there
(README), and for our own artifact reads and writes (``in_project``).
Every run carries MLflow's own system tags (user, source, git commit, branch and dirty flag: what
``mlflow.start_run`` sets), so the UI shows who ran what code. Experiments are tagged as training
ones (``mlflow.experimentKind``), which earlier MLflow 3 UIs read; 3.17's opens the training runs
view only by its address (pipeline/report/experiment_page.py).
A server at ``localhost`` is known to Ray Train's workers by an address they can reach (``reachable_uri``).
Logging what a finished stage wrote (test scores, the registered model) goes through ``store_failure_warns``:
a store that fails then (locked or corrupt database, unreachable server, deleted run) costs a warning,
never the stage's files, which are the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_BRANCH,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_PARENT_RUN_ID,
)
from sqlalchemy.exc import SQLAlchemyError

from pipeline.dag.paths import Layout
from pipeline.data.dataset_folder import INFO, DatasetInfo
from pipeline.settings.config import PROTOCOL_SPLITS

RUN_KEY_TAG = "wsol.run_key"  # the identity of a training run (config, code and data); a resumed run keeps it
SETTINGS_TAG = "wsol.settings_hash"  # a hash of the run's settings alone (pipeline/train/driver.py:settings_hash)
MAX_BATCH = 100  # MLflow accepts at most this many params per log_batch
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # a training experiment, not GenAI
CODE = ("pipeline", "stages", "pyproject.toml")  # what the dirty flag looks at: not outputs, dvc.lock or params
# How a store fails: MLflow's own errors (a server's, a deleted run's, a locked SQLite database once the
# store is open), SQLAlchemy's and sqlite3's (a corrupt database, while the store is opened) and OSError
# (requests' connection errors, an artifact folder that cannot be written).
STORE_ERRORS = (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)

log = logging.getLogger("pipeline.dag.tracking")


def tracking_uri(layout: Layout) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.mlflow_db}"


def _is_loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or None (sqlite:///..., file:///...)
        return False


def reachable_uri(uri: str, node_ip: str) -> str:
    """``uri`` with a loopback host (localhost, 127.0.0.0/8, ::1) replaced by ``node_ip``, the
    address of the node it was given on, for a process on another node; any other URI unchanged."""
    parts = urlsplit(uri)
    if not _is_loopback(parts.hostname):
        return uri
    user = parts.netloc.rpartition("@")[0]
    netloc = (f"{user}@" if user else "") + (f"[{node_ip}]" if ":" in node_ip else node_ip)
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def client_for(layout: Layout) -> MlflowClient:
    return MlflowClient(tracking_uri(layout))


@contextlib.contextmanager
def store_failure_warns(layout: Layout, lost: str) -> Iterator[None]:
    """Run a block of MLflow calls (the client opened inside it) whose failure costs a warning only:
    a store error (``STORE_ERRORS``) ends the block and logs one warning naming the store, what was
    not recorded there (``lost``) and the error's first line; the caller carries on."""
    try:
        yield
    except STORE_ERRORS as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("%s: not recorded in the MLflow store %s, which failed: %s", lost, tracking_uri(layout), first)


def experiment_id(client: MlflowClient, name: str, layout: Layout) -> str:
    """The experiment ``wsol-<name>`` (a dataset, or "pretrain"); in the project's own store its
    artifacts are in mlartifacts/wsol-<name>, recorded relative to the project root."""
    name = f"wsol-{name}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    created = client.create_experiment(name, tags=EXPERIMENT_KIND)
    if "MLFLOW_TRACKING_URI" not in os.environ:
        # MLflow makes every local location absolute when it creates an experiment, and has no call
        # to change one: the one column is set here (runs and models below it follow it).
        relative = layout.mlflow_artifacts.relative_to(layout.root) / name
        with contextlib.closing(sqlite3.connect(layout.mlflow_db)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                       (relative.as_posix(), int(created)))
    return created


@contextlib.contextmanager
def in_project(layout: Layout) -> Iterator[None]:
    """Run MLflow artifact reads and writes here: the working directory is the project root, against
    which MLflow resolves the default store's relative artifact locations."""
    with contextlib.chdir(layout.root):
        yield


@dataclass(frozen=True)
class CodeState:
    """A checkout's git commit (full hash), its branch, and whether the files looked at differ from it."""
    commit: str
    branch: str
    changed: bool


def code_state(root: Path, paths: Sequence[str] = CODE) -> CodeState | None:
    """``root``'s commit and branch, ``changed`` where a file under ``paths`` (tracked or not, git's
    ignored files aside) differs from the commit; None outside a git checkout or before its first commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return CodeState(git("rev-parse", "HEAD"), git("rev-parse", "--abbrev-ref", "HEAD"),
                         bool(git("status", "--porcelain", "--", *paths)))
    except (OSError, subprocess.CalledProcessError):
        return None


def source_tags(root: Path) -> dict[str, str]:
    """MLflow's system tags as ``mlflow.start_run`` sets them (user, source name and type) and the
    code's git commit, branch and dirty flag: "true" when the code (``CODE``) differs from the
    commit; outputs that DVC keeps in git (metrics, plots, dvc.lock) do not make it dirty."""
    # MLflow's own git tags describe the repository of the running script, not necessarily ``root``'s
    tags = {k: v for k, v in resolve_tags().items() if not k.startswith("mlflow.source.git.")}
    state = code_state(root)
    if state is not None:
        tags.update({MLFLOW_GIT_COMMIT: state.commit, MLFLOW_GIT_BRANCH: state.branch,
                     MLFLOW_GIT_DIRTY: str(state.changed).lower()})
    return tags


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested settings -> {"a.b.c": "value"} for MLflow params."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def open_run(client: MlflowClient, experiment: str, run_name: str, key: str, params: Mapping[str, str],
             tags: Mapping[str, str], root: Path, parent_run_id: str | None = None) -> str:
    """The run with this key (a resumed training run continues its MLflow run), else a new one
    with the params, these tags and the source tags of the code in ``root``. Returns the run id."""
    found = client.search_runs([experiment], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    all_tags = {**source_tags(root), RUN_KEY_TAG: key, **tags}
    if parent_run_id is not None:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_id = client.create_run(experiment, run_name=run_name, tags=all_tags).info.run_id
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, params=items[start:start + MAX_BATCH])
    return run_id


@contextlib.contextmanager
def ended_on_error(client: MlflowClient, run_id: str, layout: Layout) -> Iterator[None]:
    """End the run when the block raises, then let the error through: FAILED, or KILLED for a stop
    someone asked for: Ctrl-C, or ``sys.exit(0)``, which is how Ray Tune stops a trial its scheduler
    ends (ray/train/_internal/session.py). A resumed run is set RUNNING again by ``open_run``. A
    store failing then costs a warning."""
    try:
        yield
    except BaseException as error:
        stopped = isinstance(error, KeyboardInterrupt) or isinstance(error, SystemExit) and error.code in (0, None)
        with store_failure_warns(layout, f"the end of MLflow run {run_id}"):
            client.set_terminated(run_id, status="KILLED" if stopped else "FAILED")
        raise


def split_digest(info: DatasetInfo, split: str) -> str:
    """A hash of a split's metadata (image ids, classes, sizes, boxes, mask paths) and dataset.json."""
    digest = hashlib.sha256((info.folder / INFO).read_bytes())
    folders = {info.metadata_dir(split), info.mask_metadata_dir(split)}
    for folder in sorted(folder for folder in folders if folder is not None):
        for path in sorted(folder.glob("*")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def dataset_input(name: str, digest: str, source: str, profile: Mapping[str, int], context: str) -> DatasetInput:
    """One MLflow dataset input: ``source`` a path relative to the project (or what generated it),
    ``context`` the role MLflow shows ("training", "validation", "evaluation")."""
    dataset = Dataset(name, digest, "local", json.dumps({"uri": source}), profile=json.dumps(dict(profile)))
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_dataset_inputs(client: MlflowClient, run_id: str, info: DatasetInfo, contexts: Mapping[str, str],
                       layout: Layout) -> None:
    """The splits a run reads as its MLflow dataset inputs: ``<dataset>/<protocol split name>``, the
    split's digest, its folder (relative to the project) as source; ``contexts``: split -> context."""
    client.log_inputs(run_id, datasets=[
        dataset_input(f"{info.name}/{PROTOCOL_SPLITS[split]}", split_digest(info, split),
                      os.path.relpath(info.metadata_dir(split), layout.root),
                      {"images": len(info.metadata(split)), "classes": info.num_classes}, context)
        for split, context in contexts.items()])


@contextlib.contextmanager
def system_metrics(run_id: str, store_uri: str, interval: float, node_id: str | None = None,
                   resumed: bool = False) -> Iterator[None]:
    """Sample this machine's CPU, memory and GPU use into the run (``system/...``) every ``interval``
    seconds while the block runs (none for 0); ``node_id`` names the series where several nodes log."""
    if interval <= 0:
        yield
        return
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=resumed, node_id=node_id,
                                   tracking_uri=store_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """The numeric values of ``metrics`` at this step (an epoch; 0 for one-off values)."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()
                                      if isinstance(v, (int, float))])


def log_epoch(client: MlflowClient, run_id: str, row: Mapping[str, float]) -> None:
    """One epoch's metrics at its step: the epoch (``row["epoch"]``, from 1) is the step, not a metric."""
    log_metrics(client, run_id, {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
