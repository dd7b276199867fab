"""Where each stage reads and writes, relative to the project root (the folder of params.yaml).

    data/downloads/              archives and files as downloaded (kept across runs: not a DVC output)
    data/raw/<dataset>/          the download stage's output: images and the dataset's own annotations
    data/splits/<dataset>/       the split stage's output: metadata/{train,val,test}/ and dataset.json
    data/prepared/<dataset>/     the prepare stage's output: train and val as uint8 arrays (pipeline/data/prepared.py)
    searches/<dataset>/<backbone>-<method>.json   the protocol's search on train-fullsup (pipeline/formats/search_result.py)
    runs/<dataset>/<run>/        training: model.pt (state dict + config), metrics.json, curves
    exports/<dataset>/<run>/     torch.export (.pt2) and ONNX inference network, export.json
    results/<dataset>/<run>/     evaluation on test: metrics.json, boxacc.csv, records/
    results/<dataset>/center-gaussian/   the same for the rows that frame every method: the protocol's
    results/<dataset>/features-<backbone>/   trivial baseline (the floor), the pretrained backbone's
    results/<dataset>/few-shot-<backbone>/   features, the few-shot fully supervised row (+ its weights)
    report/<dataset>/            report.md and its figures
    ray_results/                 Ray Train's storage (checkpoints; what a resumed run restarts from)
    mlflow.db, mlartifacts/      the default MLflow store

    pretrained/<backbone>/       the pretrain stage's output: the synthetic stand-in for ImageNet weights

A run is named ``<backbone>-<method>-seed<seed>``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError, first_few

# In every folder replaced_atomically writes: the names it wrote at the folder's top. Anything else
# there (a user's file, DVC's .gitignore) is not ours: it is never deleted, and a folder holding
# such a thing is refused as an --out unless --force (issue 25: a user's folder given as --out had
# its files deleted).
MANIFEST = ".wsol-output.json"
WRITER = "wsol-pipeline"


class OutputError(PipelineError):
    """An output path that cannot be written, or whose contents writing it would destroy."""


def _probe_name(out: Path) -> Path:
    """Beside ``out``, a name as long as the longest temporary name the writers below use for it."""
    return out.with_name(f".{out.name}.{os.getpid()}.writing")


def check_writable(out: Path) -> None:
    """Refuse, before any work, an output path whose folder cannot be written: a file on its way, a
    folder without write permission, a name too long. Probed by making and removing a folder of
    the longest temporary name beside ``out`` (with any missing folders above it)."""
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{out}: cannot write there: {existing} is a file, not a folder")
    probe = _probe_name(out)
    made = [p for p in (*reversed(out.parent.parents), out.parent) if not p.exists()] + [probe]
    try:
        probe.mkdir(parents=True)
    except OSError as error:
        raise OutputError(f"{out}: cannot write there: {error.strerror or error}") from None
    finally:
        for folder in reversed(made):
            with suppress(OSError):  # not made, or no longer empty
                folder.rmdir()


def foreign_entries(folder: Path) -> list[str]:
    """Names at the top of a folder that wsol did not write there (by its manifest): every name
    where the manifest is missing or unreadable; none where the folder does not exist."""
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        written = set(manifest["entries"]) if manifest.get("written_by") == WRITER else set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        written = set()
    return [name for name in names if name not in written]


def check_output_folder(out: Path, force: bool = False) -> None:
    """Refuse, before any work, an --out folder that is a file, cannot be written
    (:func:`check_writable`) or, unless ``force``, holds anything wsol did not write there."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; expected the name of a folder to write")
    foreign = foreign_entries(out)
    if foreign and not force:
        raise OutputError(f"{out}: not written: it holds what wsol did not write ({first_few(foreign)}); choose "
                          f"another folder, or give --force to write into it (those files are kept, any of the "
                          f"names wsol writes replaced)")
    check_writable(out)


def _link_or_copy(source: str, target: str) -> None:
    """A second name for a file (a hard link: no data copied, the original stays until the first
    name is removed); a copy where the filesystem has no hard links."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _carry(entry: Path, into: Path) -> None:
    """``entry`` (a file, a link or a folder) also under ``into``, its original left in place."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.copytree(entry, into / entry.name, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(entry), str(into / entry.name))


@contextmanager
def replaced_atomically(out: Path, force: bool = False) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` to write into. When the block succeeds it takes
    ``out``'s place (a reader never sees a half-written folder), with a manifest of the names the
    block wrote; when it fails it is removed and ``out`` stays as it was.

    What ``out`` holds that wsol did not write (:func:`foreign_entries`) is never deleted: it is
    carried into the new folder (hard links), so the old folder can go. Where the block wrote a name
    ``out`` already holds as someone else's, ``out`` is left as it was (OutputError) unless ``force``:
    a stage passes it for its own folder in the :class:`Layout` (one an earlier version wrote has no
    manifest), a ``wsol`` command for an ``--out`` only with ``--force``."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; expected the name of a folder to write")
    check_writable(out)
    staging = out.with_name(f".{out.name}.writing")
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        entries = sorted(p.name for p in staging.iterdir())
        (staging / MANIFEST).write_text(json.dumps({"written_by": WRITER, "entries": entries}, indent=1) + "\n")
        foreign = foreign_entries(out)  # read now: something may have been put there while the block ran
        clashes = sorted(set(foreign) & set(entries))
        if clashes and not force:
            raise OutputError(f"{out}: not replaced: it holds {first_few(clashes)}, which wsol did not write "
                              f"there; move them, or give --force to replace them")
        for name in set(foreign) - set(entries):
            _carry(out / name, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    staging.replace(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A temporary file name beside ``path`` to write to; when the block succeeds the file takes
    ``path``'s place in one rename, so a reader sees the old file or the whole new one; when it fails
    (a full disk: ENOSPC) the partial file is removed and ``path`` stays as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _probe_name(path)
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a file through a temporary one beside it (:func:`written_atomically`)."""
    with written_atomically(path) as staging:
        staging.write_text(text)


RECORDS = "records"  # in each results folder: the evaluator's per-image records (box.npz, mask.npz)
PRETRAINED_WEIGHTS = "weights.pth"  # in pretrained/<backbone>/, when the pretrain stage trained it


# The report's names of the rows that frame every method (the stages' folders below)
FLOOR_ROW = "Center Gaussian (floor)"
FEATURES_ROW = "Pretrained features"
FEW_SHOT_ROW = "Few-shot (train-fullsup masks)"


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

    def search(self, dataset: str, backbone: str, method: str) -> Path:
        return self.root / "searches" / dataset / f"{backbone}-{method}.json"

    def run(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "runs" / dataset / run_name(backbone, method, seed)

    def export(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "exports" / dataset / run_name(backbone, method, seed)

    def results(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        return self.root / "results" / dataset / run_name(backbone, method, seed)

    def baseline(self, dataset: str) -> Path:
        """The center-Gaussian baseline's results, beside the runs'."""
        return self.root / "results" / dataset / "center-gaussian"

    def features(self, dataset: str, backbone: str) -> Path:
        """The pretrained-features row of a backbone (the features stage)."""
        return self.root / "results" / dataset / f"features-{backbone}"

    def few_shot(self, dataset: str, backbone: str) -> Path:
        """The few-shot row of a backbone (the few_shot stage): its results and its weights."""
        return self.root / "results" / dataset / f"few-shot-{backbone}"

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
