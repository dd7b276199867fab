"""Our parameter names in clovaai/wsolevaluation's (96f4b88, ``wsol/*.py``, ``main.py``).

For each backbone variant the reference names its layers its own way (VGG's ``features`` indices
shift with its layer lists, ADL's modules take indices in ResNet's layers, SPG renames blocks to
``SPG_A*``): each backbone's module maps its own keys (``reference_key``), and this one the
methods' heads. :func:`reference_name` maps a key of our state dict to the reference's, or to None
for what the reference does not have (the paper's attention blocks and embeddings). Two things rest
on it: the learning-rate groups, taken with the reference's own rule (each backbone's registry
entry: :func:`at_classifier_rate`), and importing checkpoints the reference saved
(pipeline/models/reference_checkpoint.py).
"""

from __future__ import annotations

from pipeline.models.backbones import Backbone
from pipeline.settings.registry import BACKBONES


def at_classifier_rate(backbone: str, name: str) -> bool:
    """Whether the reference trains its parameter ``name`` of ``backbone`` at lr x lr_classifier_ratio
    (main.py, Trainer._FEATURE_PARAM_LAYER_PATTERNS and _set_optimizer; the backbone's entry)."""
    rule = BACKBONES[backbone]
    return any(pattern in name for pattern in rule.feature_patterns) == rule.patterns_at_ratio


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


def reference_name(key: str, backbone: Backbone) -> str | None:
    """A key of our WSOLModel's state dict (``backbone.net.*``, ``method.*``) as the reference
    names it for this backbone variant; None where the reference has no such parameter."""
    if key.startswith("backbone.net."):
        return backbone.reference_key(key.removeprefix("backbone.net."), backbone.variant)
    if key.startswith("method."):
        return _method_name(key.removeprefix("method."), backbone.name, backbone.variant.architecture)
    raise ValueError(f"{key}: not a key of a WSOL model")
