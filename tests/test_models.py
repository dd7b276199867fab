"""Backbones with taps, the method plug-ins and the factory."""

import cv2
import numpy as np
import pytest
import torch
import torchvision

from pipeline.models import PretrainedWeightsError, build_backbone, build_model
from pipeline.models.attention import NonLocalAttention, attention_thresholds, dropped_foreground_mask
from pipeline.models.methods.base import normalize_maps
from pipeline.models.methods.spg import IGNORE, guidance_mask
from pipeline.settings.config import ConfigError
from pipeline.settings.registry import BACKBONES, FREE_CHOICES, METHODS
from tests.helpers import config

CFG = config(**{"backbone_settings.resnet18.pretrained": None})  # random init: no pretrain stage here


def _step(model, images, labels):
    model.train()
    images, targets = model.method.augment(images, labels)
    terms = model.method.losses(model(images, targets.labels), targets)
    sum(terms.values()).backward()
    return terms


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.variant_of_icl is None])
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
@pytest.mark.parametrize("architecture", ["cam", "acol", "spg", "adl"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_final_feature_map_at_224_px(backbone, architecture, large, side):
    network = build_backbone(backbone, large, architecture).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 3, 224, 224)).shape[-2:] == (side, side)
    assert network.tap_names == BACKBONES[backbone].taps[architecture]  # what params.yaml is checked against


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
    ("resnet101", "cam", "valid backbones: vgg16, resnet50, resnet18, inception_v3"),
    ("resnet50", "gradcam", "valid methods: cam, has, acol, spg, adl, cutmix, icl, icl_no_ca"),
])
def test_unknown_names_fail_with_the_valid_ones(backbone, method, message):
    with pytest.raises(ValueError, match=message):
        build_model(backbone, method, 3, CFG)


def test_an_unknown_tap_is_refused_when_params_are_loaded_naming_the_setting_and_the_valid_taps():
    with pytest.raises(ConfigError, match=r"method_settings\.adl\.taps\.vgg16: vgg16 has no tap 'conv9_9'; "
                                          r"valid taps: pool1, pool2, pool3, conv4_3, pool4, conv5_3, conv6"):
        config(**{"method_settings.adl.taps.vgg16": ["pool3", "conv9_9"]})
    with pytest.raises(ConfigError, match=r"method_settings\.icl\.taps\.resnet18: a tap is listed twice"):
        config(**{"method_settings.icl.taps.resnet18": ["layer4.0", "layer4.0"]})


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


# The parameters clovaai/wsolevaluation trains at lr x lr_classifier_ratio (main.py, _set_optimizer),
# in our names: VGG16 and InceptionV3 all but their ImageNet `features` / `Mixed*`, `Conv2d_*` layers;
# ResNet50 only layer4 and fc (so its ACoL and SPG heads at lr). VGG-SPG's conv4 and conv5 are
# SPG_A_1 and SPG_A_2 there, not `features`. ICL's modules, which the reference lacks, are new layers
# with attention_lr "classifier" (icl_lit_lr) and at the backbone's lr with "backbone" (icl's default).
VGG_SPG_CONVS = tuple(f"backbone.net.features.{i}." for i in (17, 19, 21, 24, 26, 28))
RATIO_GROUP = {
    **{("resnet50", m): ("backbone.net.layer4.", "method.classifier.") for m in ("cam", "has", "adl", "cutmix")},
    ("resnet50", "icl"): ("backbone.net.layer4.", "method.classifier."),  # attention_lr: backbone (the default)
    ("resnet50", "icl_lit_lr"): ("backbone.net.layer4.", "method.classifier.", "method.attention.", "method.embedding."),
    ("resnet50", "acol"): ("backbone.net.layer4.",),
    ("resnet50", "spg"): ("backbone.net.layer4.",),
    **{("vgg16", m): ("backbone.net.conv6.", "method.") for m in ("cam", "has", "adl", "cutmix", "icl_lit_lr")},
    ("vgg16", "icl"): ("backbone.net.conv6.", "method.classifier."),
    ("vgg16", "acol"): ("method.",),
    ("vgg16", "spg"): (*VGG_SPG_CONVS, "backbone.net.conv6.", "method."),
    **{("inception_v3", m): ("backbone.net.neck.", "method.") for m in ("cam", "has", "acol", "spg", "adl", "cutmix",
                                                                       "icl_lit_lr")},
    ("inception_v3", "icl"): ("backbone.net.neck.", "method.classifier."),
}


@pytest.mark.parametrize("backbone, method", sorted(RATIO_GROUP))
def test_learning_rate_groups_follow_the_reference_rule(backbone, method):
    model = build_model(backbone, method, 3, CFG)
    at_lr, at_ratio = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {n for n in names.values() if n.startswith(RATIO_GROUP[backbone, method])}
    assert {names[id(p)] for p in at_ratio} == expected
    assert {names[id(p)] for p in at_lr} == set(names.values()) - expected
    assert at_lr and at_ratio


def test_inception_taps_are_the_same_in_training_and_at_eval_without_attention():
    """ADL and the paper's method read the neck: in their variant it has no dropout."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)

    def taps(network, training):
        network.train(training)
        for module in network.modules():  # batch statistics aside: only dropout may differ
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        seen = {}
        with torch.no_grad():
            network(images, lambda tap, feature: seen.setdefault(tap, feature))
        return seen

    for architecture, deterministic in (("adl", True), ("cam", False)):
        network = build_backbone("inception_v3", True, architecture)
        trained, evaluated = taps(network, True), taps(network, False)
        assert list(trained) == list(network.tap_names)
        assert all(torch.equal(trained[t], evaluated[t]) for t in network.tap_names if t != "neck")
        assert torch.equal(trained["neck"], evaluated["neck"]) is deterministic  # the cam variant's dropout


# Head widths of the reference's VggAcol/ResNetAcol/InceptionAcol and VggSpg/ResNetSpg/InceptionSpg:
# (ACoL classifiers' input, SPG's B1 input, B2 input, B width, C input); SPG's taps.
HEADS = {"vgg16": (512, 512, 512, 512, 512), "resnet50": (2048, 1024, 1024, 1024, 2048),
         "inception_v3": (768, 288, 768, 512, 1024), "resnet18": (512, 256, 256, 256, 512)}  # ResNet18: ResNet50's, scaled
SPG_TAPS = {"vgg16": ("pool4", "conv5_3"), "resnet50": ("layer3.0", "layer3.5"), "inception_v3": ("pool_5d", "Mixed_6d"),
            "resnet18": ("layer3.0", "layer3.1")}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_acol_and_spg_heads_are_the_reference_heads_of_each_backbone(backbone):
    acol_in, b1_in, b2_in, width, c_in = HEADS[backbone]
    acol = build_model(backbone, "acol", 5, CFG).method
    for classifier in (acol.classifier_a, acol.classifier_b):
        convs = [m for m in classifier if isinstance(m, torch.nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
            [(acol_in, 1024, (3, 3)), (1024, 1024, (3, 3)), (1024, 5, (1, 1))]
    spg = build_model(backbone, "spg", 5, CFG)
    head = spg.method
    assert (head.tap_b1, head.tap_b2) == SPG_TAPS[backbone]
    assert (head.branch_b1[0].in_channels, head.branch_b2[0].in_channels) == (b1_in, b2_in)
    assert head.branch_b1[0].out_channels == head.branch_b_shared[0].out_channels == width
    assert (head.branch_c[0].in_channels, head.branch_c[0].out_channels) == (c_in, 512)
    assert head.classifier.in_features == c_in
    with torch.no_grad():
        outputs = spg.train()(torch.randn(2, 3, 64, 64), torch.tensor([0, 4]))
    side = 64 // 8  # every variant's final map is 1/8 of the input (28x28 at 224 px)
    assert outputs["logits_c"].shape == (2, 1, side, side)


def test_vgg_variants_are_the_reference_layer_lists():
    acol = build_backbone("vgg16", False, "acol")
    pools = [m for m in acol.net.features.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 4 + [(3, 1, 1)]  # 'M1' x4, 'M2'
    assert "conv6" not in acol.tap_names and isinstance(acol.net.features[30][1], torch.nn.AvgPool2d)
    spg = build_backbone("vgg16", False, "spg")
    assert [(c.in_channels, c.out_channels) for c in spg.net.conv6 if isinstance(c, torch.nn.Conv2d)] == [(512, 512)] * 2
    assert spg.net.features[23].kernel_size == 3 and isinstance(build_backbone("vgg16", True, "spg").net.features[23],
                                                                torch.nn.Identity)
    cam = build_backbone("vgg16", False, "cam")
    assert cam.net.conv6[0].out_channels == 1024 and cam.net.features[23].kernel_size == 2


def test_cams_are_the_reference_bicubic_upsampling_and_normalisation():
    torch.manual_seed(0)
    model = build_model("resnet50", "cam", 4, CFG).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, cams = model.cams(images, torch.tensor([2, -1, 0]))
        raw = model.method.class_maps(model.backbone(images), torch.tensor([2, int(logits[1].argmax()), 0]))
    for cam, small in zip(cams.numpy(), raw.numpy(), strict=False):
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


@pytest.mark.parametrize("empty_dfg", ["importance", "zero"])
def test_an_image_whose_dropped_foreground_mask_is_empty_keeps_its_feature_unless_as_written(empty_dfg):
    """Two images, A their channel mean (the non-local block off, so A is drawn by hand): a flat one,
    where nothing lies between 1.2 mean(A) and 0.95 max(A), so M_dfg is empty, and one whose A is
    0..15, whose M_dfg is 10..14. With M_dfg drawn (drop_rate 1), the flat image is multiplied by its
    importance map sigmoid(A) (default) or, as written, by the empty mask: a zero feature."""
    cfg = config(**{"backbone_settings.resnet18.pretrained": None, "method_settings.icl.empty_dfg": empty_dfg,
                    "method_settings.icl.hyper.resnet18.drop_rate": 1.0,
                    "method_settings.icl.ablation": {"contrastive": True, "consistency": True, "non_local": False,
                                                     "dfg_mask": True}})
    model = build_model("resnet18", "icl", 3, cfg).train()
    flat, varied = torch.ones(1, 256, 4, 4), torch.arange(16.0).view(1, 1, 4, 4).expand(1, 256, 4, 4)
    state = {}
    out = model.method.at_tap("layer3.0", torch.cat([flat, varied]), state)
    assert state["figures"]["layer3.0"]["drop_empty"].item() == 0.5  # the flat image's, counted before any fallback
    if empty_dfg == "zero":
        assert torch.equal(out[0], torch.zeros_like(out[0]))
    else:
        assert torch.allclose(out[0], flat[0] * torch.sigmoid(torch.tensor(1.0)))
    kept = ((varied[0, 0] > 9) & (varied[0, 0] < 14.25)).float()  # 10, 11, 12, 13, 14
    assert torch.equal(out[1], varied[0] * kept)


def test_every_free_choice_has_a_table2_row_that_differs_from_icl_in_it_alone():
    cfg = config()
    icl = cfg.method_settings.icl.model_dump()
    for choice in FREE_CHOICES:
        variant = getattr(cfg.method_settings, f"icl_lit_{choice.short}").model_dump()
        assert variant[choice.key] == choice.literal != icl[choice.key]
        assert {k: v for k, v in variant.items() if k != choice.key} == {k: v for k, v in icl.items() if k != choice.key}
    assert {k: v for k, v in cfg.method_settings.icl_as_written.model_dump().items() if icl[k] != v} == \
        {choice.key: choice.literal for choice in FREE_CHOICES}
    with pytest.raises(ConfigError, match=r"method_settings\.icl_lit_sign\.attention_sign must be \"free\": icl_lit_sign "
                                          r"is the paper's method with that change \(Table 2's row 'Ours, A of free sign'\)"):
        config(**{"method_settings.icl_lit_sign.attention_sign": "nonnegative"})


@pytest.mark.parametrize("method, missing", [("icl_no_ca", "ca"), ("icl_no_fc", "fc")])
def test_table2_variants_are_the_paper_method_without_one_component(method, missing):
    torch.manual_seed(0)
    terms = _step(build_model("resnet50", method, 3, CFG), torch.randn(2, 3, 48, 48), torch.tensor([0, 2]))
    assert missing not in terms and {"cls", "ca", "fc"} - {missing} <= set(terms)
    with pytest.raises(ConfigError, match="method_settings.icl_no_ca.ablation.contrastive must be false"):
        config(**{"method_settings.icl_no_ca.ablation.contrastive": True})


def _captured_maps(monkeypatch, method: str) -> list:
    """What the method's at_tap hands select_map: (importance map, dropping mask) per call."""
    seen = []
    monkeypatch.setattr(f"pipeline.models.methods.{method}.select_map",
                        lambda importance, dropping, rate: seen.append((importance, dropping)) or dropping)
    return seen


def test_the_non_local_attention_is_taken_to_float32_under_bf16_autocast(monkeypatch):
    """CPU bf16 autocast runs the GPU path's code: the block gives bf16 there; A, its thresholds and
    the masks are float32, equal to float32 arithmetic on the block's output."""
    torch.manual_seed(0)
    model = build_model("resnet50", "icl", 3, config(**{"method_settings.icl.ablation.contrastive": False})).train()
    seen = _captured_maps(monkeypatch, "icl")
    tap, feature, state = model.method.taps[0], torch.randn(2, 1024, 6, 6).bfloat16(), {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.method.at_tap(tap, feature, state)
        block = model.method.attention[tap.replace(".", "_")](feature)
    assert out.dtype == block.dtype == torch.bfloat16  # autocast's dtype for the feature and the block
    attention, (importance, dropping) = state["attention"][0], seen[0]
    assert attention.dtype == importance.dtype == dropping.dtype == torch.float32
    assert torch.equal(attention, block.float())
    hyper = model.method.hyper
    assert torch.equal(dropping, dropped_foreground_mask(attention, *attention_thresholds(attention, hyper.gamma_fg, hyper.gamma_bg)))
    assert torch.equal(importance, torch.sigmoid(attention))


@pytest.mark.parametrize("method, overrides", [
    ("adl", {}),
    ("icl", {"method_settings.icl.ablation.non_local": False, "method_settings.icl.ablation.contrastive": False}),
])
def test_a_value_between_the_bf16_and_float32_thresholds_is_masked_as_in_float32(method, overrides, monkeypatch):
    """A = [[1, v], [0, 0]] (the channel mean) with v = bf16(gamma): v < gamma * max(A) in float32, so
    v is kept by ADL's drop mask and inside ICL's M_dfg (v > theta_bg = 1.2 mean(A) = 0.57); with the
    threshold rounded to bf16 (= v) it would be dropped."""
    model = build_model("resnet50", method, 3, config(**overrides)).train()
    gamma = model.method.threshold if method == "adl" else model.method.hyper.gamma_fg  # 0.9, 0.95
    v = torch.tensor(gamma).bfloat16().float().item()  # 0.8984375, 0.94921875
    assert v < gamma and torch.tensor(gamma * 1.0).bfloat16().item() == v
    seen = _captured_maps(monkeypatch, method)
    feature = torch.tensor([[1.0, v], [0.0, 0.0]]).expand(1, 1024, 2, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.method.at_tap(model.method.taps[0], feature, {})
    dropping = seen[0][1]
    assert dropping.dtype == torch.float32
    assert dropping[0, 0, 0, 1] == 1  # float32 thresholds: v kept
    expected = [[0.0, 1.0], [1.0, 1.0]] if method == "adl" else [[0.0, 1.0], [0.0, 0.0]]
    assert torch.equal(dropping[0, 0], torch.tensor(expected))


def test_the_non_local_block_keeps_one_hw_by_hw_tensor_for_its_backward():
    block = NonLocalAttention(8)
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        block(x)
    square = {t.untyped_storage().data_ptr() for t in saved if t.shape[-2:] == (30, 30)}
    assert len(square) == 1  # the softmax's output; not the logits, nor a (B, C, HW, HW) one
