"""The training state saved in each epoch's checkpoint, and read back on resume."""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from pipeline.errors import PipelineError

STATE = "state.pt"  # model, optimizer, scheduler, scaler, epoch, history, best (a finished run's: no optimizer,
                    # scheduler or scaler; ``finished``)
OPTIMIZATION = ("optimizer", "scheduler", "scaler")  # what only further epochs need
# No RNG state: each epoch reseeds every generator from (seed, rank, epoch), so a resumed epoch
# draws exactly what the interrupted one would have.
BEST = "best_model.pt"  # state dict of the best model so far by val localization (train.select: best)


@dataclass
class TrainingState:
    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)  # one row of metrics per epoch
    best_score: float = float("-inf")
    best_epoch: int = 0
    restarts: int = 0  # times training resumed from a checkpoint
    device: str = ""  # what trains it: "cpu", or the GPU's name


def save(folder: Path, state: TrainingState, model: torch.nn.Module, optimizer, scheduler, scaler,
         best_model: dict[str, torch.Tensor] | None) -> None:
    torch.save({**asdict(state), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, folder / STATE)
    if best_model is not None:
        torch.save(best_model, folder / BEST)


class CheckpointError(PipelineError, ValueError):
    """A checkpoint that is not one this module saved; the message names the file."""


def read(path: Path) -> dict:
    """A checkpoint file's contents, unpickled with ``weights_only=True``: tensors, numbers,
    strings and containers only, so a checkpoint from shared storage cannot run code on resume."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL (\S+)", str(error))
        raise CheckpointError(f"{path}: refused: holds objects other than tensors and plain values"
                              + (f" ({named.group(1)})" if named else "")) from None
    except (EOFError, RuntimeError) as error:  # a damaged archive
        raise CheckpointError(f"{path}: not a readable checkpoint: {str(error).splitlines()[0]}") from None


def _progress(saved: dict) -> TrainingState:
    return TrainingState(**{f.name: saved[f.name] for f in fields(TrainingState)})


def finished(path: Path) -> dict:
    """A state.pt's contents without what only further epochs need: a finished run's last checkpoint."""
    return {k: v for k, v in read(path).items() if k not in OPTIMIZATION}


def load(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler) -> TrainingState:
    """Restore a checkpoint into the given objects (a finished run's: the model only); the returned
    state counts this restart."""
    saved = read(folder / STATE)
    model.load_state_dict(saved["model"])
    for name, target in zip(OPTIMIZATION, (optimizer, scheduler, scaler), strict=False):
        if name in saved:
            target.load_state_dict(saved[name])
    progress = _progress(saved)
    progress.restarts += 1
    return progress


def final_weights(folder: Path, select: str) -> tuple[dict[str, torch.Tensor], TrainingState]:
    """The weights to export (last epoch's, or the best by val localization) and the state."""
    saved = read(folder / STATE)
    state = _progress(saved)
    if select == "best":
        return read(folder / BEST), state
    return saved["model"], state
