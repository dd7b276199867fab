"""The rows that frame every method: the pretrained backbone's own map and the few-shot row, each a
score map scored by the evaluator into a result folder and an MLflow run (the few-shot row also a
registered model), with their pieces checked against hand-computed values."""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.dag.paths import PRETRAINED_WEIGHTS
from pipeline.dag.tracking import client_for
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.evaluation.reference_rows import FeatureMean, evaluate_features
from pipeline.formats.run_cost import read_cost
from pipeline.models import build_backbone
from pipeline.settings.config import load_config
from pipeline.train.few_shot import ForegroundNet, few_shot, filled_boxes, fullsup_targets, pixel_loss, registered_name
from pipeline.train.pretrain import pretrain
from tests.helpers import make_project

ROWS = {"backbones": ["resnet18"], "methods": ["cam"], "datasets.synth.classes": 2,
        "datasets.synth.images_per_class": {"train": 2, "val": 3, "test": 4}, "data.crop": 40, "data.resize": 48,
        "backbone_settings.resnet18.pretrained": None, "few_shot.epochs": 2, "few_shot.batch_size": 4}


@pytest.mark.parametrize(("backbone", "tap"), [("vgg16", "conv5_3"), ("inception_v3", "Mixed_6e"), ("resnet18", "layer4.1")])
def test_the_features_are_the_last_map_pretrained_weights_cover(backbone, tap):
    network = build_backbone(backbone, True, "cam").eval()
    assert network.pretrained_tap == tap  # VGG's conv6 and Inception's neck are new layers
    seen = {}
    with torch.no_grad():
        image = torch.rand(1, 3, 64, 64)
        network(image, lambda name, x: seen.setdefault(name, x))
        assert torch.equal(network.until(image, tap), seen[tap])


def test_the_feature_row_is_the_channel_mean_as_a_normalised_map():
    network = build_backbone("resnet18", True, "cam").eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, maps = FeatureMean(network)(image, torch.tensor([0, 1]))
        mean = network.until(image, "layer4.1").mean(1, keepdim=True)
    assert logits is None and maps.shape == (2, 224, 224)
    expected = torch.nn.functional.interpolate(mean, size=(224, 224), mode="bicubic", align_corners=False)[:, 0]
    low, high = expected.amin((1, 2), keepdim=True), expected.amax((1, 2), keepdim=True)
    assert torch.allclose(maps, (expected - low) / (high - low), atol=1e-5)


def test_boxes_are_filled_where_they_cover_the_resized_image():
    # a 20 x 10 image resized to 8 x 8: x scales by 0.4, y by 0.8
    filled = filled_boxes(((0, 0, 4, 2), (15, 5, 19, 9)), (20, 10), 8)
    expected = np.zeros((8, 8), bool)
    expected[0:3, 0:2] = True  # x 0..4 -> [0, 2); y 0..2 -> [0, 2.4) -> rows 0..2
    expected[4:8, 6:8] = True  # x 15..19 -> [6, 8); y 5..9 -> [4, 8)
    assert np.array_equal(filled, expected)


def test_the_pixel_loss_is_binary_cross_entropy_over_the_counted_pixels():
    logits = torch.zeros(1, 1, 1)  # upsampled to 2 x 2: every pixel at p = 0.5
    foreground = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert pixel_loss(logits, foreground, torch.ones(1, 2, 2)).item() == pytest.approx(math.log(2))
    confident = torch.full((1, 1, 1), 4.0)  # p = sigmoid(4) everywhere; the one background pixel is ignored
    weight = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert pixel_loss(confident, foreground, weight).item() == pytest.approx(math.log1p(math.exp(-4.0)), rel=1e-5)


def test_the_reference_rows_are_scored_logged_and_the_few_shot_model_registered(tmp_path):
    layout = make_project(tmp_path / "p", **ROWS)
    cfg = load_config(layout.root / "params.yaml")
    pretrain(cfg, layout, "resnet18")  # random init: nothing to train, as a backbone without weights
    info = DatasetInfo.load(layout.split("synth"))

    targets = fullsup_targets(info, cfg)
    assert (targets.from_masks, targets.from_boxes) == (6, 0) and targets.images.shape == (6, 3, 40, 40)
    first = info.metadata("val").image_ids[0]
    mask_name = first.replace("images/", "masks/", 1)
    mask = cv2.imread(str(info.mask_root / mask_name), cv2.IMREAD_GRAYSCALE)
    by_hand = cv2.resize(mask.astype(np.float32), (40, 40), interpolation=cv2.INTER_NEAREST) > 0.5
    assert np.array_equal(targets.foreground[0].numpy() == 1, by_hand)

    features = evaluate_features(cfg, layout, "resnet18")
    shot = few_shot(cfg, layout, "resnet18")
    client = client_for(layout)
    for row, metrics, folder in (("features", features, layout.features("synth", "resnet18")),
                                 ("few-shot", shot, layout.few_shot("synth", "resnet18"))):
        assert json.loads((folder / "metrics.json").read_text()) == metrics
        assert metrics["top1_cls"] is None and set(metrics["ci95"]) >= {"maxboxacc_v2", "pxap"}
        (run,) = client.search_runs([client.get_experiment_by_name("wsol-synth").experiment_id],
                                    f"tags.row = '{row}'")
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_maxboxacc_v2"] == round(metrics["maxboxacc_v2"], 2)  # % to 0.01, as logged
        low, high = metrics["ci95"]["maxboxacc_v2"]
        assert (run.data.metrics["test_maxboxacc_v2_ci_low"], run.data.metrics["test_maxboxacc_v2_ci_high"]) == \
            (round(low, 2), round(high, 2))

    folder = layout.few_shot("synth", "resnet18")
    cost = read_cost(folder)
    assert cost.epochs == 2 and cost.device == "cpu" and cost.wall_s > 0
    net = ForegroundNet(build_backbone("resnet18", True, "cam"))
    net.load_state_dict(torch.load(folder / PRETRAINED_WEIGHTS, weights_only=True))  # no pickle needed
    summary = json.loads((folder / "few_shot.json").read_text())
    assert summary["images"] == 6 and len(summary["history"]) == 2
    (version,) = client.search_model_versions(f"name = '{registered_name('synth', 'resnet18')}'")
    assert version.run_id == summary["mlflow_run_id"] and version.source.endswith("/model")

    first = torch.load(folder / PRETRAINED_WEIGHTS, weights_only=True)
    torch.rand(7)  # whatever drew from the global generator before: the seed alone decides the row
    assert few_shot(cfg, layout, "resnet18") == shot
    again = torch.load(folder / PRETRAINED_WEIGHTS, weights_only=True)
    assert all(torch.equal(first[k], again[k]) for k in first)
