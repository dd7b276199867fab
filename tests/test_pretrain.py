"""The pretrain stage: a plain classifier on other classes whose weights every method of the backbone
loads, and nothing to do for a backbone with ImageNet weights or none."""

import json

import pytest
import torch

from pipeline.dag.paths import PRETRAINED_WEIGHTS
from pipeline.data import synth
from pipeline.models import PretrainedWeightsError, build_model
from pipeline.settings.config import load_config
from pipeline.settings.registry import METHODS
from pipeline.train.pretrain import classifier, generate, pretrain, train_classifier
from tests.helpers import config, make_project

PLUG_INS = [m for m, spec in METHODS.items() if spec.variant_of_icl is None]  # Table 2's rows build as icl does

TINY = {"pretrain.images_per_class": 3, "pretrain.image_size": 40, "pretrain.crop": 32, "pretrain.epochs": 1,
        "pretrain.batch_size": 16}


def test_pretraining_classes_share_no_head_colour_with_the_benchmark():
    looks = synth.pretrain_looks(4)
    assert sorted(looks) == [(colour, shape) for colour in range(4, 8) for shape in range(4, 8)]
    images = generate(config(**TINY).pretrain, 4)
    assert images.pixels.shape == (16 * 3, 40, 40, 3) and sorted(set(images.labels.tolist())) == list(range(16))


def test_the_weights_load_into_every_method_with_no_missing_key(tmp_path):
    layout = make_project(tmp_path / "p", **TINY, **{"datasets.synth.images_per_class": {"train": 1, "val": 1, "test": 1}})
    cfg = load_config(layout.root / "params.yaml")
    summary = pretrain(cfg, layout, "resnet18")
    folder = layout.pretrained("resnet18")
    assert summary["trained"] and json.loads((folder / "pretrain.json").read_text())["classes"] == 16
    saved = torch.load(folder / PRETRAINED_WEIGHTS, weights_only=True)
    for method in PLUG_INS:
        model = build_model("resnet18", method, 4, cfg, folder)  # a missing backbone key would raise
        assert model.pretrained.unexpected == ()  # only fc, which every WSOL variant drops
        loaded = model.backbone.net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in saved.items() if k in loaded), method
    with pytest.raises(PretrainedWeightsError, match="run the pretrain stage"):
        build_model("resnet18", "cam", 4, cfg, tmp_path / "nowhere")


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50", "inception_v3"])
def test_every_backbones_plain_classifier_loads_into_every_method(backbone, tmp_path):
    cfg = config(**{f"backbone_settings.{backbone}.pretrained": "pretrain"})
    torch.save(classifier(backbone, 16).state_dict(), tmp_path / PRETRAINED_WEIGHTS)
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
    settings = config(**{**TINY, "pretrain.images_per_class": 24, "pretrain.epochs": 6, "pretrain.lr": 0.003}).pretrain
    torch.manual_seed(0)
    images = generate(settings, 6)  # the 2 x 2 looks a 6-class benchmark leaves: 4 classes
    history, _ = train_classifier(classifier("resnet18", 4), images, settings, torch.device("cpu"))
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.8 * losses[0], losses
