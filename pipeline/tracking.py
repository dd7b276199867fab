"""MLflow: one run per training run, under one experiment per dataset.

The store is ``$MLFLOW_TRACKING_URI`` when set (a tracking server for multi-node runs), else a
SQLite database in the project root (``mlflow.db``, MLflow 3's default backend) with artifacts in
``mlartifacts/``, both as absolute paths so that DVC experiments running in temporary copies of
the project log to the same store. Browse it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
A server at ``localhost`` is known to Ray Train's workers by an address they can reach (``reachable_uri``).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.paths import Layout

RUN_KEY_TAG = "wsol.run_key"  # the identity of a training run (config, code and data); a resumed run keeps it
MAX_BATCH = 100  # MLflow accepts at most this many params per log_batch


def tracking_uri(layout: Layout) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.mlflow_db}"


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
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


def experiment_id(client: MlflowClient, dataset: str, layout: Layout) -> str:
    """The experiment ``wsol-<dataset>``, created with artifacts in mlartifacts/ unless a server is used."""
    name = f"wsol-{dataset}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if "MLFLOW_TRACKING_URI" in os.environ else (layout.mlflow_artifacts / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit(root: Path) -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


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
             tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
    """The run with this key (a resumed training run continues its MLflow run), else a new one
    with the params and tags logged. Returns the run id."""
    found = client.search_runs([experiment], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    all_tags = {RUN_KEY_TAG: key, **tags}
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run_id = client.create_run(experiment, run_name=run_name, tags=all_tags).info.run_id
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, params=items[start:start + MAX_BATCH])
    return run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                                      if isinstance(v, (int, float))])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
