"""Weights with NaN or infinite values are refused wherever weights cross a boundary: after training
(pipeline/train/outputs.py), when a run folder is read for export or evaluation
(pipeline/formats/run_folder.py) and when a reference checkpoint is imported
(pipeline/models/reference_checkpoint.py). Such a network computes NaN logits and CAMs, which
every metric would then count as some value (``NaN > t`` is False)."""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError, first_few

SHOWN = 4  # keys named in an error


class NonFiniteWeightsError(PipelineError, ValueError):
    """Weights holding NaN or infinite values; the message names their owner and the first keys."""


def require_finite(state: dict[str, torch.Tensor], owner: str) -> None:
    """Refuse ``state`` when a floating-point tensor of it holds a NaN or an infinity; ``owner``
    (a file, a run) leads the message."""
    bad = [key for key, tensor in state.items()
           if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise NonFiniteWeightsError(f"{owner}: {len(bad)} of {len(state)} tensors hold NaN or infinite values "
                                    f"({first_few(bad, SHOWN)})")
