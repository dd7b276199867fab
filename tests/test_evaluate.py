"""The evaluate stage: the exported network's test scores equal the standalone evaluator's on its
own CAMs, and reach the training run in MLflow."""

import json

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.data.loading import SplitImages, eval_transform
from pipeline.evaluation.evaluate import evaluate, evaluate_baseline
from pipeline.formats.export_folder import load_exported
from pipeline.metrics import BoxEvaluator


def test_evaluation_equals_the_standalone_evaluator_and_reaches_mlflow(saved_project, tmp_path):
    layout, cfg, info = saved_project
    run_id = json.loads((layout.run("synth", "resnet50", "cam", 0) / "model.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{layout.mlflow_db}")
    client.create_registered_model("wsol-synth-resnet50-cam")  # as the export stage registers its model
    client.create_model_version("wsol-synth-resnet50-cam", str(tmp_path), run_id=run_id)
    metrics = evaluate(cfg, layout, "resnet50", "cam", 0)
    results = layout.results("synth", "resnet50", "cam", 0)
    assert json.loads((results / "metrics.json").read_text()) == metrics
    (v2_low, v2_high), r = metrics["ci95"]["maxboxacc_v2"], lambda key: round(metrics[key], 2)
    assert json.loads((results / "scores.json").read_text()) == {  # flat, headline only: `dvc metrics show`
        "maxboxacc_v2": r("maxboxacc_v2"), "maxboxacc_v2_ci_low": round(v2_low, 2), "maxboxacc_v2_ci_high": round(v2_high, 2),
        "top1_loc": r("top1_loc"), "top1_cls": r("top1_cls"), "gt_known_loc": r("gt_known_loc"), "pxap": r("pxap")}
    assert len((results / "boxacc.csv").read_text().splitlines()) == 1 + 100  # header + one row per threshold
    assert (results / "pr_curve.csv").read_text().startswith("threshold,precision,recall\n")

    # independent path: the exported model's CAMs as .npy files, scored by `wsol evaluate-scoremaps`
    network, _ = load_exported(layout.export("synth", "resnet50", "cam", 0) / "model.pt2")
    images = SplitImages(info, "test", eval_transform(cfg.data))
    predictions = []
    for image, label, image_id in images:
        logits, cam = network(image[None], torch.tensor([label]))
        (tmp_path / "maps" / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "maps" / f"{image_id}.npy", cam[0].numpy().astype(np.float64))
        predictions.append(f"{image_id},{int(logits.argmax())}\n")
    (tmp_path / "predictions.txt").write_text("".join(predictions))
    assert main(["evaluate-scoremaps", "--metadata-root", str(info.metadata_dir("test")), "--scoremap-root",
                 str(tmp_path / "maps"), "--predictions", str(tmp_path / "predictions.txt"),
                 "--bootstrap", str(cfg.evaluate.bootstrap_samples), "--out", str(tmp_path / "standalone.json")]) == 0
    standalone = json.loads((tmp_path / "standalone.json").read_text())
    assert standalone["maxboxacc_v2"] == pytest.approx(metrics["maxboxacc_v2"], abs=1e-9)
    assert standalone["top1_loc"] == pytest.approx(metrics["top1_loc"], abs=1e-9)
    assert standalone["top1_cls"] == pytest.approx(metrics["top1_cls"], abs=1e-9)
    for name, (low, high) in standalone["ci95"].items():  # the same per-image records, the same resamples
        assert metrics["ci95"][name] == pytest.approx([low, high], abs=1e-9) and low <= metrics[name] <= high
    assert "pxap" in metrics["ci95"] and (results / "records" / "box.npz").is_file()
    regions = metrics["regions"]
    assert regions["names"] == ["background", "context", "body", "part"]
    for shares in (regions["prior"], regions["cam_mass"], regions["box"]):
        assert sum(shares) == pytest.approx(1.0)

    run = client.get_run(run_id)
    assert run.data.metrics["test_maxboxacc_v2"] == r("maxboxacc_v2")  # % to 0.01: the runs table shows it raw
    assert run.data.metrics["test_maxboxacc_v2_ci_low"] == round(v2_low, 2)
    assert {m.step for m in client.get_metric_history(run_id, "test_maxboxacc_v2")} == {0}  # bars in MLflow's charts
    described = (f"Test (synth, {metrics['images']} images): MaxBoxAccV2 {metrics['maxboxacc_v2']:.2f} [{v2_low:.1f}, "
                 f"{v2_high:.1f}], top-1 loc {metrics['top1_loc']:.2f}, top-1 cls {metrics['top1_cls']:.2f}, "
                 f"GT-known loc {metrics['gt_known_loc']:.2f}, PxAP {metrics['pxap']:.2f}")
    assert run.data.tags["mlflow.note.content"] == described  # the run's description in the MLflow UI
    version = client.get_model_version("wsol-synth-resnet50-cam", "1")
    assert version.description == described and version.tags["test_maxboxacc_v2"] == str(r("maxboxacc_v2"))


def test_the_floor_is_one_centred_gaussian_scored_by_the_same_evaluator(saved_project):
    layout, cfg, info = saved_project
    metrics = evaluate_baseline(cfg, layout)
    assert metrics["top1_cls"] is None and metrics["top1_loc"] is None and "top1_loc" not in metrics["ci95"]
    y, x = np.mgrid[:224, :224] + 0.5 - 112
    gaussian = np.exp(-(x ** 2 + y ** 2) / (2 * 56.0 ** 2))  # sigma: a quarter of the side, by hand
    evaluator = BoxEvaluator(info.metadata("test"))
    ids = list(info.metadata("test").image_ids)
    evaluator.accumulate(np.repeat(gaussian[None], len(ids), axis=0), ids)
    assert metrics["maxboxacc_v2"] == pytest.approx(evaluator.compute().maxboxacc_v2, abs=1e-9)
    assert json.loads((layout.baseline("synth") / "metrics.json").read_text()) == metrics
    assert set(json.loads((layout.baseline("synth") / "scores.json").read_text())) == {  # no class: no top-1
        "maxboxacc_v2", "maxboxacc_v2_ci_low", "maxboxacc_v2_ci_high", "gt_known_loc", "pxap"}
