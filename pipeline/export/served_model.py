"""The exported network in MLflow: logged into its training run as an MLflow model (a pyfunc over
``model.pt2``, pipeline/export/pyfunc_network.py) with a tensor signature, and registered as
``wsol-<dataset>-<backbone>-<method>`` (one version per export; the version is tagged with its seed),
so ``mlflow models serve -m models:/<name>/<version>`` and ``mlflow.pyfunc.load_model`` use it
without this repository.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, in_project, store_failure_warns, tracking_uri
from pipeline.export import pt2_safety
from pipeline.formats.export_folder import PT2, ExportMeta
from pipeline.metrics.conventions import RESIZE_LENGTH

log = logging.getLogger(__name__)

NETWORK_CODE = Path(__file__).with_name("pyfunc_network.py")  # and the one module it imports, pt2_safety.py


@contextlib.contextmanager
def fluent_store(layout: Layout) -> Iterator[None]:
    """MLflow's module-level API (``mlflow.start_run``, ``mlflow.pyfunc``) on the project's store,
    from its root, for the block only: ``mlflow.set_tracking_uri`` also sets $MLFLOW_TRACKING_URI,
    which would otherwise send every later client of this process (``tracking_uri``) to that store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(layout))
    try:
        with in_project(layout):
            yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None: unset again (MLflow accepts it)


def registered_name(meta: ExportMeta) -> str:
    return f"wsol-{meta.dataset}-{meta.backbone}-{meta.method}"


def signature(meta: ExportMeta) -> ModelSignature:
    """images (B, 3, S, S) float32 and classes (B,) int64 -> logits (B, K) and CAMs (B, 224, 224) float32."""
    size, float32 = meta.input_size, np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, 3, size, size), "images"), TensorSpec(np.dtype(np.int64), (-1,), "classes")]),
        outputs=Schema([TensorSpec(float32, (-1, meta.num_classes), "logits"),
                        TensorSpec(float32, (-1, RESIZE_LENGTH, RESIZE_LENGTH), "cams")]))


def _example(meta: ExportMeta) -> dict[str, np.ndarray]:
    """One mid-grey image (0 after normalisation), CAM of its predicted class."""
    return {"images": np.zeros((1, 3, meta.input_size, meta.input_size), np.float32), "classes": np.array([-1])}


def log_served_model(folder: Path, meta: ExportMeta, seed: int, layout: Layout) -> int | None:
    """Log an export folder's model.pt2 into its training run and register it; returns the model
    version, or None (with a warning) when the store has no such run or fails: the export folder is
    the record."""
    if meta.mlflow_run_id is None:
        return None
    name = registered_name(meta)
    with store_failure_warns(layout, f"model {name} (MLflow run {meta.mlflow_run_id})"):
        client = client_for(layout)
        trained = client.get_run(meta.mlflow_run_id).info  # ended by the train stage
        with fluent_store(layout), mlflow.start_run(run_id=meta.mlflow_run_id), warnings.catch_warnings():
            # MLflow asks for type hints on predict for a signature it would infer; ours is explicit (signature())
            warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name, python_model=str(NETWORK_CODE), code_paths=[pt2_safety.__file__],  # named after the run, not "model"
                artifacts={"network": str((folder / PT2).resolve())},
                signature=signature(meta), input_example=_example(meta), registered_model_name=name,
                metadata={"class_names": meta.class_names, "cam_threshold": meta.cam_threshold},
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"])
        version = int(info.registered_model_version)
        if trained.end_time is not None:  # MLflow's Duration is the training's, not training plus this export
            client.set_terminated(meta.mlflow_run_id, status=trained.status, end_time=trained.end_time)
        client.set_model_version_tag(name, str(version), "seed", str(seed))
        log.info("registered %s version %d (MLflow run %s)", name, version, meta.mlflow_run_id)
        return version
    return None
