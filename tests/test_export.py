"""Exported networks: TorchScript and ONNX equal the eager model, carry their metadata, and an export
beyond the tolerance is refused."""

import json

import pytest
import torch

from pipeline.export import ExportError, export
from pipeline.export_folder import load_exported


def test_exports_match_the_eager_network_and_carry_their_metadata(saved_project):
    layout, cfg, info = saved_project
    folder = layout.export("synth", "resnet50", "icl", 0)
    report = json.loads((folder / "export.json").read_text())
    for kind in ("torchscript", "onnx"):
        assert max(report[kind]["max_abs_difference"].values()) <= cfg.export.tolerance
    network, meta = load_exported(folder / "model.ts")
    assert meta.input_size == 48 and meta.class_names == list(info.class_names) and meta.cam_threshold == 0.4
    logits, cams = network(torch.randn(5, 3, 48, 48), torch.tensor([-1, 0, 1, 2, -1]))  # another batch size
    assert logits.shape == (5, 3) and cams.shape == (5, 224, 224)
    # ICL's attention branch acts only in training: the export leaves its weights out
    assert (folder / "model.ts").stat().st_size < 0.8 * (layout.run("synth", "resnet50", "icl", 0) / "model.pt").stat().st_size


def test_an_export_beyond_the_tolerance_is_refused(saved_project, tmp_path):
    layout, _, _ = saved_project
    with pytest.raises(ExportError, match=r"model\.(ts|onnx): exported outputs differ from the eager model by"):
        export(layout.run("synth", "resnet50", "cam", 0), tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()
