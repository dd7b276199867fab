"""Models that clovaai/wsolevaluation trained, loaded into ours (``wsol import-checkpoint``).

The reference saves ``{'architecture', 'epoch', 'state_dict', 'optimizer'}`` (main.py,
``_torch_save_model``) with its own parameter names; :func:`import_checkpoint` renames every key
(pipeline/models/reference.py), reshapes its 1x1-conv classifiers into our linear ones, and says
which keys of the file no layer of ours takes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError, first_few
from pipeline.formats.finite_weights import require_finite
from pipeline.models.model import WSOLModel, build_model
from pipeline.models.reference import reference_name
from pipeline.settings.config import Config

# the reference's class-score layers, whose first dimension is the number of classes
CLASSIFIER_KEYS = ("fc.weight", "SPG_A4.weight", "classifier_A.4.weight")
OPTIONAL = ("num_batches_tracked",)  # BatchNorm counters: absent from checkpoints of old PyTorch versions


class CheckpointImportError(PipelineError, ValueError):
    """A checkpoint that does not fit the asked backbone and method; the message names the keys."""


@dataclass(frozen=True)
class ImportedCheckpoint:
    model: WSOLModel  # in eval mode
    num_classes: int
    loaded: int  # tensors taken from the file
    unused: tuple[str, ...]  # keys of the file that no layer of ours takes


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a reference checkpoint (or of a bare state dict), without running any code
    the file may carry (``weights_only``), every value finite."""
    try:
        with warnings.catch_warnings():  # torch warns before failing on a TorchScript file
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointImportError(f"{path}: no such file") from None
    except Exception:  # unpickling errors have many types, and messages of many lines
        raise CheckpointImportError(f"{path}: not a PyTorch checkpoint of tensors saved by torch.save") from None
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointImportError(f"{path}: holds no state dict of tensors (expected the reference's "
                                    "{'state_dict': ...} or a bare state dict)")
    if state and all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key.removeprefix("module."): value for key, value in state.items()}
    require_finite(state, str(path))
    return state


def import_checkpoint(path: Path, backbone: str, method: str, config: Config) -> ImportedCheckpoint:
    """Our (backbone, method) model, built from ``config`` (map size, widths), holding the weights of
    a checkpoint the reference saved for the same pair."""
    state = read_state_dict(path)
    classifier = next((key for key in CLASSIFIER_KEYS if key in state), None)
    if classifier is None:
        raise CheckpointImportError(f"{path}: none of the reference's classifier weights ({', '.join(CLASSIFIER_KEYS)}) "
                                    "is in it")
    num_classes = state[classifier].shape[0]
    model = build_model(backbone, method, num_classes, config, pretrained=False)
    variant = model.backbone.variant
    converted, used, missing = {}, set(), []
    for key, ours in model.state_dict().items():
        name = reference_name(key, model.backbone)
        if name is None:
            raise CheckpointImportError(f"{backbone}-{method}: the reference has no {key}; it trains no such model")
        if name not in state:
            if not name.endswith(OPTIONAL):
                missing.append(name)
            continue
        value = state[name]
        if value.numel() != ours.numel() or value.squeeze().shape != ours.squeeze().shape:
            raise CheckpointImportError(f"{path}: {name} is {tuple(value.shape)}, our {key} is {tuple(ours.shape)} "
                                        f"(is large_feature_map or the method right for this checkpoint?)")
        converted[key] = value.reshape(ours.shape).to(ours.dtype)  # a 1x1 conv classifier as a linear one
        used.add(name)
    if missing:
        shown = first_few(missing, 6)
        raise CheckpointImportError(f"{path}: not a {backbone}-{method} checkpoint of the reference "
                                    f"({variant.architecture} variant, large_feature_map {variant.large_feature_map}): "
                                    f"it lacks {shown}")
    model.load_state_dict(converted, strict=False)
    return ImportedCheckpoint(model.eval(), num_classes, len(converted), tuple(sorted(set(state) - used)))
