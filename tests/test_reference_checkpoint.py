"""Checkpoints clovaai/wsolevaluation saved, imported into our models.

Each key set is built here by hand, the way the reference's wsol/*.py name their layers: its
ResNetAdl puts ADL modules at layer3.1, layer4.1 and layer4.4, its ResNetSpg splits layer3 into
SPG_A1/SPG_A2, its VGG `features` indices follow configs_dict, its Inception neck is SPG_A3_1b,
SPG_A3_2b and the 1x1-conv classifier SPG_A4.
"""

import json

import pytest
import torch
import torchvision

from pipeline.cli import main
from pipeline.models.reference_checkpoint import CheckpointImportError, import_checkpoint
from tests.helpers import config, make_project

K = 5
CFG = config()


def _random(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random tensors of these shapes, at the scales of a trained network's (He-initialised layers,
    BatchNorm's scales near 1 and variances positive): at other scales the network's activations
    overflow to NaN, which export refuses."""
    generator = torch.Generator().manual_seed(0)

    def tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.randint(1, 1000, shape, generator=generator)
        if key.endswith("running_var"):
            return torch.rand(shape, generator=generator) + 0.5
        weights = torch.randn(shape, generator=generator)
        if len(shape) > 1:  # He initialisation
            return weights * (2 / torch.tensor(shape[1:]).prod()).sqrt()
        return 1 + 0.1 * weights if key.endswith("weight") else 0.1 * weights

    return {key: tensor(key, shape) for key, shape in shapes.items()}


def _conv(ours: str, theirs: str, out_channels: int, in_channels: int, side: int) -> dict[str, tuple[str, tuple]]:
    return {f"{ours}.weight": (f"{theirs}.weight", (out_channels, in_channels, side, side)),
            f"{ours}.bias": (f"{theirs}.bias", (out_channels,))}


def _cam_head(features: int, conv: bool) -> dict[str, tuple[str, tuple]]:
    """CAM's classifier: the reference's Linear fc, or its 1x1 conv SPG_A4."""
    if conv:
        return _conv("method.classifier", "SPG_A4", K, features, 1)
    return {"method.classifier.weight": ("fc.weight", (K, features)), "method.classifier.bias": ("fc.bias", (K,))}


def _acol_head(features: int) -> dict[str, tuple[str, tuple]]:
    head = {}
    for x in "AB":
        for index, (out, inp, side) in zip((0, 2, 4), ((1024, features, 3), (1024, 1024, 3), (K, 1024, 1)), strict=False):
            head |= _conv(f"method.classifier_{x.lower()}.{index}", f"classifier_{x}.{index}", out, inp, side)
    return head


def _spg_head(b1: int, b2: int, width: int, features: int) -> dict[str, tuple[str, tuple]]:
    return (_cam_head(features, conv=True) | _conv("method.branch_b1.0", "SPG_B_1a.0", width, b1, 3)
            | _conv("method.branch_b2.0", "SPG_B_2a.0", width, b2, 3)
            | _conv("method.branch_b_shared.0", "SPG_B_shared.0", width, width, 3)
            | _conv("method.branch_b_shared.2", "SPG_B_shared.2", 1, width, 1)
            | _conv("method.branch_c.0", "SPG_C.0", 512, features, 3) | _conv("method.branch_c.2", "SPG_C.2", 1, 512, 1))


def _checkpoint(backbone: dict[str, tuple[str, tuple]], head: dict[str, tuple[str, tuple]]):
    """(reference state dict, our key -> its reference key)."""
    pairs = backbone | head
    return _random(dict(pairs.values())), {ours: theirs for ours, (theirs, _) in pairs.items()}


def _resnet(architecture: str):
    """A ResNet50 as the reference's ResNetCam/Adl/Acol/Spg name it."""
    layers = {}
    for key, value in torchvision.models.resnet50().state_dict().items():
        if key.startswith("fc."):
            continue
        theirs = key
        layer, block, *rest = key.split(".")
        if architecture == "adl" and layer in ("layer3", "layer4"):
            theirs = ".".join([layer, str({"layer3": [0, 2, 3, 4, 5, 6], "layer4": [0, 2, 3]}[layer][int(block)]), *rest])
        if architecture == "spg" and layer == "layer3":
            theirs = ".".join(["SPG_A1", "0", *rest] if block == "0" else ["SPG_A2", str(int(block) - 1), *rest])
        layers[f"backbone.net.{key}"] = (theirs, tuple(value.shape))
    head = {"cam": _cam_head(2048, conv=False), "adl": _cam_head(2048, conv=False), "acol": _acol_head(2048),
            "spg": _spg_head(1024, 1024, 1024, 2048)}[architecture]
    return _checkpoint(layers, head)


# the reference VGG's conv indices in `features` (configs_dict: every number a conv + ReLU, every 'M'/'A' one index)
VGG_CONVS = {("cam", False): [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
             ("cam", True): [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 23, 25, 27],
             ("adl", False): [0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 26, 28, 30],
             ("adl", True): [0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 25, 27, 29],
             ("acol", False): [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
             # VggSpg: conv1-3 in `features`, conv4 and conv5 renamed SPG_A_1.{0,2,4} and SPG_A_2.{0,2,4}
             ("spg", False): [0, 2, 5, 7, 10, 12, 14, "SPG_A_1.0", "SPG_A_1.2", "SPG_A_1.4",
                              "SPG_A_2.0", "SPG_A_2.2", "SPG_A_2.4"]}
TORCHVISION_VGG_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def _vgg(architecture: str, large: bool):
    layers = {}
    for key, value in torchvision.models.vgg16().state_dict().items():
        if not key.startswith("features."):
            continue
        index, param = key.split(".")[1:]
        place = VGG_CONVS[architecture, large][TORCHVISION_VGG_CONVS.index(int(index))]
        layers[f"backbone.net.{key}"] = (f"features.{place}.{param}" if isinstance(place, int) else f"{place}.{param}",
                                         tuple(value.shape))
    if architecture == "acol":
        return _checkpoint(layers, _acol_head(512))
    if architecture == "spg":  # SPG_A_3: two new 3x3 convs
        conv6 = _conv("backbone.net.conv6.0", "SPG_A_3.0", 512, 512, 3) | _conv("backbone.net.conv6.2", "SPG_A_3.2", 512, 512, 3)
        return _checkpoint(layers | conv6, _spg_head(512, 512, 512, 512))
    return _checkpoint(layers | _conv("backbone.net.conv6.0", "conv6", 1024, 512, 3), _cam_head(1024, conv=False))


def _inception(architecture: str):
    layers = {}
    for key, value in torchvision.models.inception_v3(init_weights=False, aux_logits=False).state_dict().items():
        if key.startswith(("Conv2d_", "Mixed_5", "Mixed_6")):
            layers[f"backbone.net.{key}"] = (key, tuple(value.shape))
    if architecture == "acol":  # InceptionAcol: classifiers on Mixed_6e, no neck
        return _checkpoint(layers, _acol_head(768))
    neck = _conv("backbone.net.neck.1", "SPG_A3_1b.0", 1024, 768, 3) | _conv("backbone.net.neck.4", "SPG_A3_2b.0", 1024, 1024, 3)
    head = _spg_head(288, 768, 512, 1024) if architecture == "spg" else _cam_head(1024, conv=True)
    return _checkpoint(layers | neck, head)


CASES = {
    "resnet50-cam": ("resnet50", "cam", False, lambda: _resnet("cam")),
    "resnet50-adl": ("resnet50", "adl", False, lambda: _resnet("adl")),
    "resnet50-acol": ("resnet50", "acol", False, lambda: _resnet("acol")),
    "resnet50-spg": ("resnet50", "spg", True, lambda: _resnet("spg")),
    "vgg16-cam-14": ("vgg16", "cam", False, lambda: _vgg("cam", False)),
    "vgg16-has-28": ("vgg16", "has", True, lambda: _vgg("cam", True)),
    "vgg16-adl-14": ("vgg16", "adl", False, lambda: _vgg("adl", False)),
    "vgg16-adl-28": ("vgg16", "adl", True, lambda: _vgg("adl", True)),
    "vgg16-acol-14": ("vgg16", "acol", False, lambda: _vgg("acol", False)),
    "vgg16-spg-14": ("vgg16", "spg", False, lambda: _vgg("spg", False)),
    "inception_v3-cutmix": ("inception_v3", "cutmix", True, lambda: _inception("cam")),
    "inception_v3-adl": ("inception_v3", "adl", True, lambda: _inception("adl")),
    "inception_v3-acol": ("inception_v3", "acol", True, lambda: _inception("acol")),
    "inception_v3-spg": ("inception_v3", "spg", False, lambda: _inception("spg")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reference_checkpoint_loads_every_tensor_where_the_reference_had_it(case, tmp_path):
    backbone, method, large, build = CASES[case]
    state, ours_to_theirs = build()
    path = tmp_path / "last_checkpoint.pth.tar"
    torch.save({"architecture": backbone, "epoch": 50, "state_dict": {**state, "extra.weight": torch.ones(2)},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}}, path)
    settings = config(**{f"backbone_settings.{backbone}.large_feature_map": large})
    imported = import_checkpoint(path, backbone, method, settings)
    assert imported.num_classes == K and imported.unused == ("extra.weight",)
    ours = imported.model.state_dict()
    for key, theirs in ours_to_theirs.items():
        assert torch.equal(ours[key], state[theirs].reshape(ours[key].shape)), (key, theirs)
    weights = {k for k in ours if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert weights <= set(ours_to_theirs)  # every parameter of ours came from the file


def test_a_checkpoint_of_another_variant_is_refused_naming_what_it_lacks(tmp_path):
    state, _ = _resnet("cam")
    torch.save({"state_dict": state}, tmp_path / "cam.pth.tar")
    with pytest.raises(CheckpointImportError, match=r"not a resnet50-spg checkpoint of the reference \(spg variant.*"
                                                    r"it lacks SPG_A1\.0\.conv1\.weight"):
        import_checkpoint(tmp_path / "cam.pth.tar", "resnet50", "spg", CFG)
    vgg, _ = _vgg("cam", False)  # a 14x14 VGG's conv5 sits at other indices than the 28x28 one expects
    torch.save({"state_dict": vgg}, tmp_path / "vgg.pth.tar")
    with pytest.raises(CheckpointImportError, match=r"it lacks features\.23\.weight"):
        import_checkpoint(tmp_path / "vgg.pth.tar", "vgg16", "cam", config(**{"backbone_settings.vgg16.large_feature_map": True}))


def test_files_that_are_no_checkpoint_are_refused(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torch.save({"state_dict": {"layer1.weight": torch.ones(1)}}, tmp_path / "headless.pth")
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), tmp_path / "scripted.pt")
    cases = {tmp_path / "text.pth": "text.pth: not a PyTorch checkpoint of tensors saved by torch.save$",
             tmp_path / "scripted.pt": "scripted.pt: not a PyTorch checkpoint of tensors saved by torch.save$",
             tmp_path / "missing.pth": "no such file",
             tmp_path / "headless.pth": "none of the reference's classifier weights"}
    for path, message in cases.items():
        with pytest.raises(CheckpointImportError, match=message):
            import_checkpoint(path, "resnet50", "cam", CFG)


def test_an_imported_checkpoint_is_exported_and_evaluated_by_the_pipeline(tmp_path, capsys):
    layout = make_project(tmp_path / "p", **{"datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 3},
                                             "data.crop": 48, "data.resize": 56})
    state, _ = _resnet("cam")
    classes = 4  # the default synthetic dataset's
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:classes], state["fc.bias"][:classes]
    torch.save({"state_dict": state}, tmp_path / "last_checkpoint.pth.tar")
    params = str(layout.root / "params.yaml")
    run, export = tmp_path / "imported", tmp_path / "exported"
    assert main(["import-checkpoint", "--from", "wsolevaluation", "--backbone", "resnet50", "--method", "cam",
                 str(tmp_path / "last_checkpoint.pth.tar"), "--params", params, "--out", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_classes"] == classes and report["unused_keys"] == []
    meta = json.loads((run / "model.json").read_text())
    assert meta["imported_from"].endswith("last_checkpoint.pth.tar") and 0 <= meta["cam_threshold"] <= 1
    assert main(["export", str(run), "--params", params, "--out", str(export)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(export), "--params", params, "--out", str(tmp_path / "results")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 3 * classes and 0 <= metrics["maxboxacc_v2"] <= 100
    assert json.loads((tmp_path / "results" / "metrics.json").read_text()) == metrics
    with pytest.raises(SystemExit):  # the reference has no ICL
        main(["import-checkpoint", "--from", "wsolevaluation", "--backbone", "resnet50", "--method", "icl",
              str(tmp_path / "last_checkpoint.pth.tar")])
