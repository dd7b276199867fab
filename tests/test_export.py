"""Exported networks: the torch.export program and ONNX equal the eager model, carry their metadata,
and an export beyond the tolerance is refused."""

import json

import numpy as np
import pytest
import torch

from pipeline.dag.paths import MANIFEST
from pipeline.export.export import ExportError, _differences, export
from pipeline.formats.export_folder import load_exported


def test_exports_match_the_eager_network_and_carry_their_metadata(saved_project):
    layout, cfg, info = saved_project
    folder = layout.export("synth", "resnet50", "icl", 0)
    report = json.loads((folder / "export.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "export.json", "model.onnx", "model.pt2"]
    for kind in ("pt2", "onnx"):
        assert max(report[kind]["max_difference"].values()) <= cfg.export.tolerance
    network, meta = load_exported(folder / "model.pt2")
    assert meta.input_size == 48 and meta.class_names == list(info.class_names) and meta.cam_threshold == 0.4
    images, classes = torch.randn(5, 3, 48, 48), torch.tensor([-1, 0, 1, 2, -1])
    logits, cams = network(images, classes)  # another batch size than the export's example
    assert logits.shape == (5, 3) and cams.shape == (5, 224, 224) and 0 <= cams.min() and cams.max() <= 1
    # the eval-mode graph: BatchNorm on its running statistics (an image alone as in a batch), no dropout
    alone = network(images[:1], classes[:1])
    assert all(torch.allclose(a, b[:1], atol=1e-5) for a, b in zip(alone, (logits, cams), strict=False))
    # ICL's attention branch acts only in training: the export leaves its weights out
    trained = layout.run("synth", "resnet50", "icl", 0) / "model.pt"
    assert (folder / "model.pt2").stat().st_size < 0.8 * trained.stat().st_size


def test_differences_are_absolute_below_1_and_relative_above():
    cams = np.array([0.5, 0.25])
    assert _differences((np.array([300.03]), cams + 2e-5), (np.array([300.0]), cams)) == \
        pytest.approx({"logits": 1e-4, "cams": 2e-5})


def test_an_export_beyond_the_tolerance_is_refused(saved_project, tmp_path):
    layout, _, _ = saved_project
    with pytest.raises(ExportError, match=r"model\.(pt2|onnx): exported outputs differ from the eager model by"):
        export(layout.run("synth", "resnet50", "cam", 0), tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()
