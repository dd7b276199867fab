"""What training a run took, as the train stage records it beside the run (``runs/<dataset>/<run>/cost.json``)
and the report reads it. Not part of the run's result: timings vary from run to run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.formats.records import read_record

COST = "cost.json"


@dataclass(frozen=True)
class RunCost:
    wall_s: float  # s: every epoch's training and val scoring, summed over the run's attempts
    images_per_s: float  # training images per second over all workers, mean over epochs (val excluded)
    device: str  # what trained it: "cpu", or the GPU's name ("NVIDIA H200")
    workers: int  # Ray Train workers
    epochs: int


def read_cost(folder: Path) -> RunCost:
    """A trained run folder's cost.json (an imported checkpoint has none)."""
    return read_record(RunCost, folder / COST, "run the train stage first (an imported checkpoint has no cost)")
