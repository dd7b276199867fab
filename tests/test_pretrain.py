"""The pretrain stage: a plain classifier on other classes whose weights every method of the backbone
loads, and nothing to do for a backbone with ImageNet weights or none."""

import json

import numpy as np
import pytest
import torch

from pipeline.dag.paths import PRETRAINED_WEIGHTS
from pipeline.dag.tracking import client_for, in_project
from pipeline.data import synth
from pipeline.models import PretrainedWeightsError, build_model
from pipeline.settings.config import load_config
from pipeline.settings.registry import METHODS
from pipeline.train.pretrain import (
    Images,
    classifier,
    colour_only_top1,
    generate,
    held_out_split,
    pretrain,
    train_classifier,
)
from tests.helpers import config, make_project

PLUG_INS = [m for m, spec in METHODS.items() if spec.variant_of_icl is None]  # Table 2's rows build as icl does

TINY = {"pretrain.images_per_class": 3, "pretrain.image_size": 40, "pretrain.crop": 32, "pretrain.epochs": 1,
        "pretrain.batch_size": 16}


def test_pretraining_never_sees_a_benchmark_class_and_its_classes_are_shapes_not_colours():
    # benchmark class c (c < 4) is colour c on shape c: shape 2 may wear any colour but 2, shape 6 any
    assert synth.pretrain_colours(2, 4) == [0, 1, 3, 4, 5, 6, 7] and synth.pretrain_colours(6, 4) == list(range(8))
    images = generate(config(**TINY).pretrain, 4)
    assert images.pixels.shape == (8 * 3, 40, 40, 3) and sorted(set(images.labels.tolist())) == list(range(8))
    assert not any(colour == shape < 4 for colour, shape in zip(images.colours.tolist(), images.labels.tolist(), strict=True))


def test_the_colour_only_baseline_is_the_best_lookup_of_the_head_colour():
    # training: colour 0 worn by shapes 0, 0, 1 -> names shape 0; colour 1 by shapes 1, 2, 2 -> names shape 2
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 2, 1, 1])
    colours = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 5])
    images = Images(np.zeros((10, 1, 1, 3), np.uint8), labels, colours)
    train, held = np.arange(6), np.arange(6, 10)
    # held out: (colour 0, shape 0) right, (1, 2) right, (1, 1) wrong, (5, 1): an unseen colour names shape 0, wrong
    assert colour_only_top1(images, train, held) == 50.0
    train, held = held_out_split(np.zeros(50), seed=3)
    assert len(held) == 5 and sorted([*train, *held]) == list(range(50))


def test_the_weights_load_into_every_method_with_no_missing_key(tmp_path):
    layout = make_project(tmp_path / "p", **TINY, **{"datasets.synth.images_per_class": {"train": 1, "val": 1, "test": 1},
                                                     "ray.system_metrics_interval": 0.05})
    cfg = load_config(layout.root / "params.yaml")
    summary = pretrain(cfg, layout, "resnet18")
    folder = layout.pretrained("resnet18")
    written = json.loads((folder / "pretrain.json").read_text())
    assert summary["trained"] and written["classes"] == 8 and written["class_names"] == list(synth.BODY_SHAPES)
    assert 0 <= written["held_out_top1_cls"] <= 100 and 0 <= written["colour_only_top1_cls"] <= 100
    saved = torch.load(folder / PRETRAINED_WEIGHTS, weights_only=True)
    for method in PLUG_INS:
        model = build_model("resnet18", method, 4, cfg, folder)  # a missing backbone key would raise
        assert model.pretrained.unexpected == ()  # only fc, which every WSOL variant drops
        loaded = model.backbone.net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in saved.items() if k in loaded), method
    with pytest.raises(PretrainedWeightsError, match="run the pretrain stage"):
        build_model("resnet18", "cam", 4, cfg, tmp_path / "nowhere")
    client = client_for(layout)  # its MLflow run, as every run: inputs, artifacts, system metrics
    run = client.get_run(summary["mlflow_run_id"])
    [used] = run.inputs.dataset_inputs
    assert used.dataset.name == "pretrain-shapes" and json.loads(used.dataset.profile) == {"images": 24, "classes": 8}
    assert [tag.value for tag in used.tags] == ["training"]
    with in_project(layout):  # the store's artifact location is relative to the project
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["pretrain.json"]
    assert run.info.status == "FINISHED" and any(key.startswith("system/") for key in run.data.metrics)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50", "inception_v3"])
def test_every_backbones_plain_classifier_loads_into_every_method(backbone, tmp_path):
    cfg = config(**{f"backbone_settings.{backbone}.pretrained": "pretrain"})
    torch.save(classifier(backbone, 8).state_dict(), tmp_path / PRETRAINED_WEIGHTS)
    for method in PLUG_INS:
        assert build_model(backbone, method, 4, cfg, tmp_path).pretrained.unexpected == (), method


def test_a_backbone_with_imagenet_weights_or_none_is_not_pretrained(tmp_path):
    layout = make_project(tmp_path / "p", **{"datasets.synth.images_per_class": {"train": 1, "val": 1, "test": 1},
                                             "backbone_settings.resnet18.pretrained": "IMAGENET1K_V1"})
    summary = pretrain(load_config(layout.root / "params.yaml"), layout, "resnet18")
    assert summary == {"backbone": "resnet18", "source": "IMAGENET1K_V1", "trained": False}
    assert not (layout.pretrained("resnet18") / PRETRAINED_WEIGHTS).exists()


@pytest.mark.slow
def test_a_short_real_training_run_lowers_its_loss():
    settings = config(**{**TINY, "pretrain.images_per_class": 24, "pretrain.epochs": 6}).pretrain
    torch.manual_seed(0)
    images = generate(settings, 4)
    train, _ = held_out_split(images.labels, settings.seed)
    history = train_classifier(classifier("resnet18", 8), images, train, settings, torch.device("cpu"))
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.8 * losses[0], losses
