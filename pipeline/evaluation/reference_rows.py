"""The rows that frame every method, beside the protocol's floor (evaluate.py's center Gaussian):

* **pretrained features**: the backbone as the runs start from it (its ``pretrained`` weights, no
  WSOL training), its class-agnostic map the channel mean of its last pretrained feature map
  (:attr:`Backbone.pretrained_tap`): how much of the localization the backbone brought;
* **few-shot**: the same backbone and weights with a foreground head trained on train-fullsup's
  masks only (pipeline/train/few_shot.py): what that much full supervision buys without any WSOL
  method (Choe et al., TPAMI 2022).

Both are score maps scored on test by the same evaluator as the runs, into results/<dataset>/
(paths.py), each with its own MLflow run in the dataset's experiment (tags ``row`` and ``backbone``).
"""

from __future__ import annotations

import time

import torch
from mlflow import MlflowClient
from torch import nn

from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, experiment_id, flatten, open_run, store_failure_warns
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.evaluation.evaluate import score_reference
from pipeline.models import Backbone, build_model
from pipeline.models.model import score_maps
from pipeline.report.colours import RUN_COLOUR_TAG, row_colour
from pipeline.settings.config import Config


def pretrained_backbone(config: Config, layout: Layout, backbone: str) -> Backbone:
    """The backbone in its CAM variant with the weights ``backbone_settings.<backbone>.pretrained``
    names (the pretrain stage's from pretrained/<backbone>/), as every run starts."""
    classes = max(2, DatasetInfo.load(layout.split(config.dataset)).num_classes)
    return build_model(backbone, "cam", classes, config, layout.pretrained(backbone)).backbone


class FeatureMean(nn.Module):
    """images (B, 3, H, W), classes (ignored) -> (None, (B, 224, 224) channel mean of the backbone's
    last pretrained feature map, as a score map)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.tap = backbone.pretrained_tap

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, score_maps(self.backbone.until(images, self.tap).mean(dim=1))


def open_row_run(config: Config, layout: Layout, row: str, backbone: str, params: dict) -> tuple[MlflowClient, str | None]:
    """A new MLflow run ``<row>-<backbone>`` in the dataset's experiment; None (with a warning) where
    the store fails: the results folder is the record."""
    client = client_for(layout)
    with store_failure_warns(layout, f"the {row} row of {backbone}"):
        return client, open_run(client, experiment_id(client, config.dataset, layout), f"{row}-{backbone}",
                                f"{row}-{config.dataset}-{backbone}-{time.time_ns()}", flatten(params),
                                {"row": row, "backbone": backbone, RUN_COLOUR_TAG: row_colour(row)}, layout.root)
    return client, None


def evaluate_features(config: Config, layout: Layout, backbone: str) -> dict:
    """The features stage: the pretrained features' channel mean scored on test into
    results/<dataset>/features-<backbone>/."""
    network = pretrained_backbone(config, layout, backbone).eval()
    source = config.backbone_settings.of(backbone).pretrained
    client, run_id = open_row_run(config, layout, "features", backbone,
                                  {"backbone": backbone, "pretrained": str(source), "tap": network.pretrained_tap})
    metrics = score_reference(FeatureMean(network), config, layout, layout.features(config.dataset, backbone), run_id)
    if run_id is not None:
        with store_failure_warns(layout, f"the end of MLflow run {run_id}"):
            client.set_terminated(run_id)
    return metrics
