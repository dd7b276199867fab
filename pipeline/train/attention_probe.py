"""Whether a method's attention learned anything: each tap's attention maps scored on train-fullsup.

Every epoch, rank 0 runs the plain network (eval mode, nothing masked: the features the CAM is read
from) over train-fullsup and asks the method for its maps at each tap (``Method.attention_maps``:
the paper's method gives A and the channel mean of the same feature, ADL its channel mean). Each map
is scored by its object AUC against the split's boxes at the map's own resolution
(:mod:`pipeline.metrics.object_auc`), averaged over the images where the boxes cover some cells
and not all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.loading import split_loader
from pipeline.metrics.object_auc import cells_in_boxes, object_auc
from pipeline.models import WSOLModel
from pipeline.settings.config import DataConfig


@torch.no_grad()
def attention_localization(model: WSOLModel, info: DatasetInfo, data: DataConfig, batch_size: int,
                           device: torch.device, prepared: Path | None = None) -> dict[str, float]:
    """``attention/<tap>/val_auc_<map>``: each map's mean object AUC on train-fullsup (the caller puts
    the model in eval mode). Empty when the method has no attention or the split has no boxes (a
    mask-only dataset)."""
    metadata = info.metadata("val")
    if metadata.boxes is None:
        return {}
    scores: dict[str, list[float]] = defaultdict(list)
    for images, _, image_ids in split_loader(info, "val", data, batch_size, train=False, prepared=prepared):
        maps: dict[str, torch.Tensor] = {}

        def record(tap: str, feature: torch.Tensor, maps: dict[str, torch.Tensor] = maps) -> torch.Tensor:
            for name, attention in model.method.attention_maps(tap, feature).items():
                maps[f"attention/{tap}/val_auc_{name}"] = attention[:, 0].float().cpu()
            return feature

        model.backbone(images.to(device), record)
        for key, batch in maps.items():
            for image_id, attention in zip(image_ids, batch.numpy(), strict=False):
                inside = cells_in_boxes(metadata.boxes[image_id], metadata.image_sizes[image_id], attention.shape)
                auc = object_auc(attention, inside)
                if auc is not None:
                    scores[key].append(auc)
    return {key: float(np.mean(values)) for key, values in scores.items()}
