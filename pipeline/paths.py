"""Where each stage reads and writes, relative to the project root (the folder of params.yaml).

    data/downloads/              archives and files as downloaded (kept across runs: not a DVC output)
    data/raw/<dataset>/          the download stage's output: images and the dataset's own annotations
    data/splits/<dataset>/       the split stage's output: metadata/{train,val,test}/ and dataset.json
    data/prepared/<dataset>/     the prepare stage's output: train and val as uint8 arrays (pipeline/data/prepared.py)
    runs/<dataset>/<run>/        training: model.pt (state dict + config), metrics.json, curves
    exports/<dataset>/<run>/     torch.export (.pt2) and ONNX inference network, export.json
    results/<dataset>/<run>/     evaluation on test: metrics.json, boxacc.csv, records/
    results/<dataset>/center-gaussian/   the same for the protocol's trivial baseline
    report/<dataset>/            report.md and its figures
    ray_results/                 Ray Train's storage (checkpoints; what a resumed run restarts from)
    mlflow.db, mlartifacts/      the default MLflow store

    pretrained/<backbone>/       the pretrain stage's output: the synthetic stand-in for ImageNet weights

A run is named ``<backbone>-<method>-seed<seed>``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@contextmanager
def replaced_atomically(out: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` to write into. When the block succeeds it takes
    ``out``'s place (a reader never sees a half-written folder); when it fails it is removed and
    ``out`` stays as it was."""
    staging = out.with_name(f".{out.name}.writing")
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    staging.replace(out)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a file through a temporary one beside it: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.writing")
    try:
        staging.write_text(text)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


RECORDS = "records"  # in each results folder: the evaluator's per-image records (box.npz, mask.npz)
PRETRAINED_WEIGHTS = "weights.pth"  # in pretrained/<backbone>/, when the pretrain stage trained it


def run_name(backbone: str, method: str, seed: int) -> str:
    return f"{backbone}-{method}-seed{seed}"


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def here(cls) -> Layout:
        return cls(Path.cwd().resolve())

    @property
    def downloads(self) -> Path:
        return self.root / "data" / "downloads"

    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    def split(self, dataset: str) -> Path:
        return self.root / "data" / "splits" / dataset

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def pretrained(self, backbone: str) -> Path:
        return self.root / "pretrained" / backbone

    def run(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "runs" / dataset / run_name(backbone, method, seed)

    def export(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "exports" / dataset / run_name(backbone, method, seed)

    def results(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "results" / dataset / run_name(backbone, method, seed)

    def baseline(self, dataset: str) -> Path:
        """The center-Gaussian baseline's results, beside the runs'."""
        return self.root / "results" / dataset / "center-gaussian"

    def report(self, dataset: str) -> Path:
        return self.root / "report" / dataset

    @property
    def ray_storage(self) -> Path:
        return self.root / "ray_results"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"
