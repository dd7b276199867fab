"""Exporting the inference network: one ``torch.export`` program of the eval-mode network, with a
dynamic batch, saved as model.pt2 and converted to ONNX, each file checked against the eager model.

The network takes normalised images (B, 3, S, S) and classes (B,) (-1: the predicted class) and
returns logits (B, K) and CAMs (B, 224, 224) in [0, 1], the protocol's score maps. The attention
branches of the training methods are not in it: they act only in training. What a user of the files
needs travels inside model.pt2 and beside both files (pipeline/formats/export_folder.py).
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
from torch.export import ExportedProgram, ExportGraphSignature
from torch.export.graph_signature import InputKind

from pipeline.dag.paths import replaced_atomically
from pipeline.data.loading import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import PipelineError
from pipeline.formats.export_folder import META, ONNX, PT2, REPORT, ExportMeta, load_exported
from pipeline.formats.run_folder import read_run
from pipeline.models import WSOLModel

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
    """A batch unlike the export example (another size, predicted and given classes)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, size, size, generator=generator)
    return images, torch.tensor([-1, 0, num_classes - 1])


def _differences(got: tuple, expected: tuple) -> dict[str, float]:
    """Per output, max |exported - eager| over max(1, max |eager|): absolute for the CAMs (in [0, 1]),
    relative for logits, which on the check batch of noise images reach hundreds, where float32's
    rounding alone differs by 1e-4 between ONNX Runtime and PyTorch kernels."""
    return {name: float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1.0, float(np.abs(np.asarray(b)).max())))
            for name, a, b in zip(("logits", "cams"), got, expected, strict=False)}


def _verdict(name: str, differences: dict[str, float], tolerance: float) -> dict:
    """The differences within ``tolerance``, or an ExportError; NaN (a network computing NaN) is not within it."""
    worst = float(np.max(list(differences.values())))  # NaN when any is
    if not worst <= tolerance:
        raise ExportError(f"{name}: exported outputs differ from the eager model by {worst:.3g} > {tolerance:.3g}")
    return {"max_difference": differences, "tolerance": tolerance}


def _program(network: InferenceNetwork, example: tuple) -> ExportedProgram:
    """The network as torch.export traces it, non-strict (its default: the Python runs as in eager, so
    only the eval-mode branches reach the graph), for any batch size."""
    batch = torch.export.Dim("batch")
    return _without_unread_weights(torch.export.export(network, example, dynamic_shapes=({0: batch}, {0: batch})))


def _without_unread_weights(program: ExportedProgram) -> ExportedProgram:
    """The program without the parameters and buffers its graph never reads: torch.export lifts all the
    module's, so the training-only branches' weights (and BatchNorm's counters) would travel in the file."""
    graph, signature = program.graph, program.graph_signature
    unread = {node.name: node for node in graph.nodes if node.op == "placeholder" and not node.users}
    dropped = {spec.arg.name: spec.target for spec in signature.input_specs
               if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.arg.name in unread}
    for name in dropped:
        graph.erase_node(unread[name])
    kept = ExportGraphSignature([spec for spec in signature.input_specs if spec.arg.name not in dropped],
                                signature.output_specs)
    weights = {name: value for name, value in program.state_dict.items() if name not in dropped.values()}
    return ExportedProgram(program.graph_module, graph, kept, weights, program.range_constraints,
                           program.module_call_graph, program.example_inputs, program.constants,
                           verifiers=program.verifiers)


def export_pt2(program: ExportedProgram, check: tuple, expected: tuple, path: Path, meta: ExportMeta,
               tolerance: float) -> dict:
    torch.export.save(program, path, extra_files={META: json.dumps(asdict(meta))})
    loaded, _ = load_exported(path)
    got = tuple(t.numpy() for t in loaded(*check))
    return {"file": path.name, **_verdict(path.name, _differences(got, expected), tolerance)}


def export_onnx(program: ExportedProgram, check: tuple, expected: tuple, path: Path, tolerance: float) -> dict:
    import onnxruntime

    for name in ("torch.onnx", "onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one self-contained file (weights inside, not in a model.onnx.data beside it)
        torch.onnx.export(program, f=str(path), input_names=["images", "classes"], output_names=["logits", "cams"],
                          dynamo=True, external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": check[0].numpy(), "classes": check[1].numpy()})
    return {"file": path.name, **_verdict(path.name, _differences(got, expected), tolerance)}


def export(run_folder: Path, out: Path, tolerance: float, force: bool = False) -> dict:
    """Export a run folder (pipeline/formats/run_folder.py); returns (and writes) export.json. ``force``: as
    :func:`pipeline.dag.paths.replaced_atomically`."""
    run = read_run(run_folder)
    size = run.meta.run_settings.data.crop
    meta = ExportMeta(**run.meta.identity(), input_size=size, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                      mlflow_run_id=run.meta.mlflow_run_id)
    network = InferenceNetwork(run.model)
    check = _check_inputs(size, meta.num_classes)
    with torch.no_grad():
        expected = tuple(t.numpy() for t in network(*check))
    program = _program(network, (torch.zeros(2, 3, size, size), torch.tensor([0, -1])))
    with replaced_atomically(out, force) as staging:
        report = {**asdict(meta), "pt2": export_pt2(program, check, expected, staging / PT2, meta, tolerance),
                  "onnx": export_onnx(program, check, expected, staging / ONNX, tolerance)}
        (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s: torch.export and ONNX within %.3g of the eager model", out, tolerance)
    return report
