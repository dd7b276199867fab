"""Exporting the inference network: TorchScript and ONNX, each checked against the eager model.

The network takes normalised images (B, 3, S, S) and classes (B,) (-1: the predicted class) and
returns logits (B, K) and CAMs (B, 224, 224) in [0, 1], the protocol's score maps. The attention
branches of the training methods are not in it: they act only in training. What a user of the file
needs travels inside the TorchScript file and beside both files (pipeline/export_folder.py).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.data.loading import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import PipelineError
from pipeline.export_folder import META, ONNX, REPORT, TORCHSCRIPT, ExportMeta, load_exported
from pipeline.models import WSOLModel
from pipeline.paths import replaced_atomically
from pipeline.run_folder import read_run

log = logging.getLogger(__name__)


class ExportError(PipelineError, RuntimeError):
    """An exported model differs from the eager one by more than the tolerance."""


class InferenceNetwork(nn.Module):
    def __init__(self, model: WSOLModel):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.cams(images, classes)


def _check_inputs(size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch unlike the tracing example (another size, predicted and given classes)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, size, size, generator=generator)
    return images, torch.tensor([-1, 0, num_classes - 1])


def _differences(got: tuple, expected: tuple) -> dict[str, float]:
    return {name: float(np.abs(np.asarray(a) - np.asarray(b)).max()) for name, a, b in zip(("logits", "cams"), got, expected)}


def _verdict(name: str, differences: dict[str, float], tolerance: float) -> dict:
    worst = max(differences.values())
    if worst > tolerance:
        raise ExportError(f"{name}: exported outputs differ from the eager model by {worst:.3g} > {tolerance:.3g}")
    return {"max_abs_difference": differences, "tolerance": tolerance}


def export_torchscript(network: InferenceNetwork, example: tuple, check: tuple, expected: tuple, path: Path,
                       meta: ExportMeta, tolerance: float) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter; TorchScript's deprecation in favour of torch.export
        # frozen: the weights the network uses become constants, the training-only modules are left out
        traced = torch.jit.freeze(torch.jit.trace(network, example, check_trace=False))
        torch.jit.save(traced, str(path), _extra_files={META: json.dumps(asdict(meta))})
    loaded, _ = load_exported(path)
    with torch.no_grad():
        got = tuple(t.numpy() for t in loaded(*check))
    return {"file": path.name, **_verdict(path.name, _differences(got, expected), tolerance)}


def export_onnx(network: InferenceNetwork, example: tuple, check: tuple, expected: tuple, path: Path,
                tolerance: float) -> dict:
    import onnxruntime

    for name in ("torch.onnx", "onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, example, str(path), input_names=["images", "classes"], output_names=["logits", "cams"],
                          dynamic_axes={"images": {0: "batch"}, "classes": {0: "batch"}}, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": check[0].numpy(), "classes": check[1].numpy()})
    return {"file": path.name, **_verdict(path.name, _differences(got, expected), tolerance)}


def export(run_folder: Path, out: Path, tolerance: float) -> dict:
    """Export a run folder (pipeline/run_folder.py); returns (and writes) export.json."""
    run = read_run(run_folder)
    size = run.meta.settings.data.crop
    meta = ExportMeta(**run.meta.identity(), input_size=size, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                      mlflow_run_id=run.meta.mlflow_run_id)
    network = InferenceNetwork(run.model)
    example = (torch.zeros(2, 3, size, size), torch.tensor([0, -1]))
    check = _check_inputs(size, meta.num_classes)
    with torch.no_grad():
        expected = tuple(t.numpy() for t in network(*check))
    with replaced_atomically(out) as staging:
        report = {**asdict(meta),
                  "torchscript": export_torchscript(network, example, check, expected, staging / TORCHSCRIPT, meta, tolerance),
                  "onnx": export_onnx(network, example, check, expected, staging / ONNX, tolerance)}
        (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s: TorchScript and ONNX within %.3g of the eager model", out, tolerance)
    return report
