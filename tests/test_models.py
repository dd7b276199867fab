"""Backbones with taps, the method plug-ins and the factory."""

import cv2
import numpy as np
import pytest
import torch
import torchvision

from pipeline.config import BACKBONES, METHODS
from pipeline.models import PretrainedWeightsError, build_backbone, build_model
from pipeline.models.methods.base import normalize_maps
from pipeline.models.methods.spg import IGNORE, guidance_mask
from tests.helpers import config

CFG = config()


def _step(model, images, labels):
    model.train()
    images, targets = model.method.augment(images, labels)
    terms = model.method.losses(model(images, targets.labels), targets)
    sum(terms.values()).backward()
    return terms


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_pair_trains_a_step_and_yields_cams(backbone, method):
    torch.manual_seed(0)
    model = build_model(backbone, method, 3, CFG)
    terms = _step(model, torch.randn(2, 3, 48, 48), torch.tensor([0, 2]))
    assert "cls" in terms and all(torch.isfinite(t) for t in terms.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.method.parameters())
    model.eval()
    with torch.no_grad():
        logits, cams = model.cams(torch.randn(2, 3, 48, 48), torch.tensor([1, -1]))
    assert logits.shape == (2, 3) and cams.shape == (2, 224, 224)
    assert cams.min() >= 0 and cams.max() <= 1


@pytest.mark.parametrize("large, side", [(True, 28), (False, 14)])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_final_feature_map_at_224_px(backbone, large, side):
    network = build_backbone(backbone, large).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 3, 224, 224)).shape[-2:] == (side, side)


@pytest.mark.parametrize("method", ["icl", "adl", "spg"])
def test_the_attention_branch_is_off_at_eval(method, monkeypatch):
    torch.manual_seed(0)
    model = build_model("resnet50", method, 3, CFG).eval()
    plain = build_model("resnet50", "cam", 3, CFG).eval()
    plain.backbone.load_state_dict(model.backbone.state_dict())
    plain.method.classifier.load_state_dict(model.method.classifier.state_dict())

    def never(*args, **kwargs):
        raise AssertionError("a tap module ran at eval")

    monkeypatch.setattr(model.method, "at_tap", never)
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        for p in model.method.parameters():  # the method's own modules have no say at eval
            if p is not model.method.classifier.weight and p is not model.method.classifier.bias:
                p.add_(torch.randn_like(p))
        assert torch.equal(model(images)["logits"], plain(images)["logits"])
        assert torch.equal(model.cams(images, torch.tensor([0, 1]))[1], plain.cams(images, torch.tensor([0, 1]))[1])


def test_icl_consistency_gradient_reaches_early_taps_but_not_the_reference():
    torch.manual_seed(0)
    cfg = config(**{"method_settings.icl.ablation.contrastive": False})
    model = build_model("resnet50", "icl", 3, cfg).train()
    outputs = model(torch.randn(2, 3, 48, 48), torch.tensor([0, 1]))
    outputs["fc"].backward()
    first, *_, last = model.method.taps
    assert model.method.attention[first.replace(".", "_")].f.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.method.attention[last.replace(".", "_")].parameters())


def test_icl_without_non_local_uses_no_attention_module():
    cfg = config(**{"method_settings.icl.ablation.non_local": False, "method_settings.icl.ablation.contrastive": False})
    model = build_model("resnet50", "icl", 3, cfg)
    assert model.method.attention is None and model.method.embedding is None
    terms = _step(model, torch.randn(2, 3, 48, 48), torch.tensor([0, 1]))
    assert set(terms) == {"cls", "fc"}


@pytest.mark.parametrize("backbone, method, message", [
    ("resnet18", "cam", "valid backbones: vgg16, resnet50, inception_v3"),
    ("resnet50", "gradcam", "valid methods: cam, has, acol, spg, adl, cutmix, icl"),
])
def test_unknown_names_fail_with_the_valid_ones(backbone, method, message):
    with pytest.raises(ValueError, match=message):
        build_model(backbone, method, 3, CFG)


def test_unknown_tap_names_the_setting_and_the_valid_taps():
    cfg = config(**{"method_settings.adl.taps.vgg16": ["pool3", "conv9_9"]})
    with pytest.raises(ValueError, match=r"method_settings\.adl\.taps\.vgg16: vgg16 has no tap 'conv9_9'; "
                                         r"valid taps: pool1, pool2, pool3, conv4_3, conv5_3, conv6"):
        build_model("vgg16", "adl", 3, cfg)


@pytest.mark.parametrize("backbone, reference", [
    ("resnet50", torchvision.models.resnet50),
    ("vgg16", torchvision.models.vgg16),
    ("inception_v3", lambda: torchvision.models.inception_v3(init_weights=False, aux_logits=True)),
])
def test_imagenet_weights_load_from_a_pth_file(tmp_path, backbone, reference):
    torch.manual_seed(1)
    weights = reference().state_dict()
    path = tmp_path / f"{backbone}.pth"
    torch.save(weights, path)
    model = build_model(backbone, "cam", 3, config(**{f"backbone_settings.{backbone}.pretrained": str(path)}))
    assert model.pretrained.unexpected == ()
    loaded = model.backbone.net.state_dict()
    for key, value in loaded.items():
        if key in weights:
            assert torch.equal(value, weights[key]), key
    assert all(model.backbone.is_new(f"net.{k}") for k in loaded if k not in weights)


def test_incomplete_or_unreadable_weights_are_errors(tmp_path):
    weights = torchvision.models.resnet50().state_dict()
    del weights["layer2.0.conv1.weight"]
    torch.save(weights, tmp_path / "partial.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    cases = {
        str(tmp_path / "partial.pth"): r"lack 1 resnet50 parameter\(s\): layer2\.0\.conv1\.weight",
        str(tmp_path / "missing.pth"): "does not exist",
        str(tmp_path / "text.pth"): "not a readable state dict",
        "IMAGENET9K_V9": "neither a .pth file nor a weights name of torchvision's ResNet50_Weights",
    }
    for source, message in cases.items():
        with pytest.raises(PretrainedWeightsError, match=message):
            build_model("resnet50", "cam", 3, config(**{"backbone_settings.resnet50.pretrained": source}))


def test_new_layers_are_the_classifier_extra_convs_and_method_modules():
    model = build_model("vgg16", "icl", 3, CFG)
    pretrained, new = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    new_names = {names[id(p)] for p in new}
    assert {"method.classifier.weight", "backbone.net.conv6.0.weight"} <= new_names
    assert any(n.startswith("method.attention.") for n in new_names)
    assert any(n.startswith("method.embedding.") for n in new_names)
    assert all(names[id(p)].startswith("backbone.net.features.") for p in pretrained)
    assert len(pretrained) + len(new) == len(list(model.parameters()))


def test_cams_are_the_reference_bicubic_upsampling_and_normalisation():
    torch.manual_seed(0)
    model = build_model("resnet50", "cam", 4, CFG).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, cams = model.cams(images, torch.tensor([2, -1, 0]))
        raw = model.method.class_maps(model.backbone(images), torch.tensor([2, int(logits[1].argmax()), 0]))
    for cam, small in zip(cams.numpy(), raw.numpy()):
        expected = cv2.resize(small, (224, 224), interpolation=cv2.INTER_CUBIC)
        expected = (expected - expected.min()) / (expected.max() - expected.min())
        np.testing.assert_allclose(cam, expected, atol=1e-4)


def test_normalize_maps_sends_constant_and_nan_maps_to_zeros():
    maps = torch.stack([torch.full((2, 2), 3.0), torch.tensor([[0.0, float("nan")], [1, 2]]), torch.tensor([[1.0, 3], [2, 5]])])
    out = normalize_maps(maps)
    assert torch.equal(out[0], torch.zeros(2, 2)) and torch.equal(out[1], torch.zeros(2, 2))
    assert torch.allclose(out[2], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))


def test_has_hides_whole_grid_patches():
    model = build_model("resnet50", "has", 3, config(**{"method_settings.has.grid_size": 4}))
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 18) + 1  # never 0 before hiding
    hidden, targets = model.method.augment(images, torch.arange(8) % 3)
    zero = (hidden == 0).all(dim=1)  # (8, 16, 18): pixels hidden in every channel
    assert torch.equal(hidden[~zero.unsqueeze(1).expand_as(hidden)], images[~zero.unsqueeze(1).expand_as(images)])
    for y in range(0, 16, 4):
        for x in range(0, 18, 4):
            patch = zero[:, y:y + 4, x:x + 4].flatten(1)
            assert (patch.all(dim=1) | ~patch.any(dim=1)).all()  # a patch is hidden whole or not at all
    assert 0.3 < zero.float().mean() < 0.7 and torch.equal(targets.labels, torch.arange(8) % 3)


def test_cutmix_pastes_one_box_and_mixes_labels_by_its_area():
    model = build_model("resnet50", "cutmix", 3, CFG)
    torch.manual_seed(3)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 20, 20).clone()  # image i is constant i
    labels = torch.tensor([0, 1, 2, 0])
    mixed, targets = model.method.augment(images, labels)
    changed = (mixed != images).any(dim=1)  # (4, 20, 20)
    pasted_area = changed.flatten(1).sum(dim=1).max().item() / 400
    assert targets.mixed_labels is not None and 0 < pasted_area < 1
    assert targets.lam == pytest.approx(1 - pasted_area)
    for i in range(4):
        source = mixed[i, 0][changed[i]]
        assert (source == source[0]).all() if len(source) else True
        if len(source):
            assert targets.mixed_labels[i] == labels[int(source[0])]


def test_adl_multiplies_by_the_drop_mask_when_it_is_drawn():
    model = build_model("resnet50", "adl", 3, config(**{"method_settings.adl.drop_rate": 1.0,
                                                       "method_settings.adl.threshold": 0.5}))
    feature = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 2, 2, 2)  # attention = the 2x2 map, max 4
    out = model.method.at_tap("layer3.0", feature, {})
    assert torch.equal(out[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # kept where A < 2


def test_acol_erases_what_classifier_a_finds_before_classifier_b():
    model = build_model("resnet50", "acol", 2, config(**{"method_settings.acol.threshold": 0.7}))
    seen = {}
    model.method.classifier_b.register_forward_pre_hook(lambda module, args: seen.update(b=args[0]))
    map_a = torch.tensor([[0.0, 1.0], [0.5, 0.9]])
    model.method.classifier_a.forward = lambda feature: torch.stack([map_a, -map_a])[None]
    feature = torch.ones(1, 2048, 2, 2)
    model.method.head(feature, torch.tensor([0]), None)
    assert torch.equal(seen["b"][0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # normalised >= 0.7 erased


def test_spg_guidance_labels_confident_pixels_and_ignores_the_rest():
    attention = torch.linspace(0, 1, 100).view(1, 10, 10)
    mask = guidance_mask(attention, high=0.7, low=0.05)
    assert torch.equal(mask == 1, attention > 0.7) and torch.equal(mask == 0, attention < 0.05)
    assert ((mask == IGNORE) == ((attention >= 0.05) & (attention <= 0.7))).all()
    few = guidance_mask(attention, high=0.95, low=0.05)  # 4 pixels above 0.95 < 30: falls back to 0.7 * max
    assert torch.equal(few == 1, attention > 0.7)
