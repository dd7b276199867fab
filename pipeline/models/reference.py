"""Our parameter names in clovaai/wsolevaluation's (96f4b88, ``wsol/*.py``, ``main.py``).

For each backbone variant the reference names its layers its own way (VGG's ``features`` indices
shift with its layer lists, ADL's modules take indices in ResNet's layers, SPG renames blocks to
``SPG_A*``). :func:`reference_name` maps a key of our state dict to the reference's, or to None
for what the reference does not have (the paper's attention blocks and embeddings). Two things rest
on it: the learning-rate groups, taken with the reference's own rule, and importing checkpoints
the reference saved (:mod:`pipeline.models.import_checkpoint`).
"""

from __future__ import annotations

from pipeline.models.backbones import Variant

# torchvision's indices of VGG16's 13 convolutions in ``features``
TORCHVISION_VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# The same convolutions' indices in the reference's ``features``, built by make_layers from
# configs_dict, where each number is a conv and its ReLU (two indices) and each 'M', 'M1', 'M2' or
# 'A' (an ADL slot) one index. SPG's ``features`` end after pool3: conv4 and conv5 are SPG_A_1, SPG_A_2.
REFERENCE_VGG_CONVS = {
    ("cam", False): TORCHVISION_VGG_CONVS,
    ("cam", True): (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 23, 25, 27),  # no pool4
    ("adl", False): (0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 26, 28, 30),  # 'A' after pool3, conv4_3 and conv5_3
    ("adl", True): (0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 25, 27, 29),
    ("acol", False): TORCHVISION_VGG_CONVS,  # 'M1'/'M2' take the pools' places
    ("acol", True): TORCHVISION_VGG_CONVS,
}
# ResNetAdl inserts ADL after layer3's block 0 and layer4's blocks 0 and 2 (_ADL_POSITION).
ADL_RESNET_BLOCKS = {"layer3": {0: 0, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6}, "layer4": {0: 0, 1: 2, 2: 3}}

# main.py, Trainer._FEATURE_PARAM_LAYER_PATTERNS and _set_optimizer: a parameter whose name holds
# one of these is a "feature" parameter of VGG and Inception (trained at lr, the others at
# lr x lr_classifier_ratio) but a "classifier" parameter of ResNet (layer4 and fc at the ratio,
# the rest at lr).
# The reference has no ResNet18: ours takes ResNet50's names and rule.
FEATURE_PATTERNS = {"vgg16": ("features.",), "inception_v3": ("Mixed", "Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4"),
                    "resnet50": ("layer4.", "fc."), "resnet18": ("layer4.", "fc.")}
PATTERNS_AT_RATIO = {"vgg16": False, "inception_v3": False, "resnet50": True, "resnet18": True}


def at_classifier_rate(backbone: str, name: str) -> bool:
    """Whether the reference trains its parameter ``name`` at lr x lr_classifier_ratio."""
    matched = any(pattern in name for pattern in FEATURE_PATTERNS[backbone])
    return matched == PATTERNS_AT_RATIO[backbone]


def _classifier(backbone: str, architecture: str) -> str:
    """The reference's name of CAM's classifier: a Linear ``fc``, or the 1x1 conv ``SPG_A4``."""
    return "SPG_A4" if backbone == "inception_v3" or architecture == "spg" else "fc"


def _method_name(key: str, backbone: str, architecture: str) -> str | None:
    module, _, rest = key.partition(".")
    if module == "classifier":
        return f"{_classifier(backbone, architecture)}.{rest}"
    renamed = {"classifier_a": "classifier_A", "classifier_b": "classifier_B", "branch_b1": "SPG_B_1a",
               "branch_b2": "SPG_B_2a", "branch_b_shared": "SPG_B_shared", "branch_c": "SPG_C"}
    return f"{renamed[module]}.{rest}" if module in renamed else None


def _vgg(key: str, variant: Variant) -> str:
    module, index, rest = (key.split(".", 2) + [""])[:3]
    if module == "conv6":  # cam/adl: one conv named conv6; spg: SPG_A_3's two
        return f"SPG_A_3.{index}.{rest}" if variant.architecture == "spg" else f"conv6.{rest}"
    k = TORCHVISION_VGG_CONVS.index(int(index))
    if variant.architecture == "spg":
        if k < 7:
            return key
        return f"SPG_A_{1 if k < 10 else 2}.{2 * ((k - 7) % 3)}.{rest}"
    return f"features.{REFERENCE_VGG_CONVS[variant.architecture, variant.large_feature_map][k]}.{rest}"


def _resnet(key: str, variant: Variant) -> str:
    layer, block, rest = (key.split(".", 2) + ["", ""])[:3]
    if layer not in ("layer3", "layer4") or variant.architecture not in ("adl", "spg"):
        return key
    if variant.architecture == "adl":
        return f"{layer}.{ADL_RESNET_BLOCKS[layer][int(block)]}.{rest}"
    if layer == "layer4":
        return key
    return f"SPG_A1.0.{rest}" if block == "0" else f"SPG_A2.{int(block) - 1}.{rest}"


def _inception(key: str, variant: Variant) -> str:
    module, index, rest = (key.split(".", 2) + ["", ""])[:3]
    if module == "neck":  # our neck: [dropout, conv, relu, dropout, conv, relu, dropout]
        return f"{'SPG_A3_1b' if index == '1' else 'SPG_A3_2b'}.0.{rest}"
    return key


BACKBONE_NAMES = {"vgg16": _vgg, "resnet50": _resnet, "resnet18": _resnet, "inception_v3": _inception}


def reference_name(key: str, backbone: str, variant: Variant) -> str | None:
    """A key of our WSOLModel's state dict (``backbone.net.*``, ``method.*``) as the reference
    names it for this backbone variant; None where the reference has no such parameter."""
    if key.startswith("backbone.net."):
        return BACKBONE_NAMES[backbone](key.removeprefix("backbone.net."), variant)
    if key.startswith("method."):
        return _method_name(key.removeprefix("method."), backbone, variant.architecture)
    raise ValueError(f"{key}: not a key of a WSOL model")
