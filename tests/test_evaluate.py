"""The evaluate stage: the exported network's test scores equal the standalone evaluator's on its
own CAMs, and reach the training run in MLflow."""

import json

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.data.loading import SplitImages, eval_transform
from pipeline.evaluate import evaluate
from pipeline.export_folder import load_exported


def test_evaluation_equals_the_standalone_evaluator_and_reaches_mlflow(saved_project, tmp_path):
    layout, cfg, info = saved_project
    metrics = evaluate(cfg, layout, "resnet50", "cam")
    results = layout.results("synth", "resnet50", "cam")
    assert json.loads((results / "metrics.json").read_text()) == metrics
    assert len((results / "boxacc.csv").read_text().splitlines()) == 1 + 100  # header + one row per threshold
    assert (results / "pr_curve.csv").read_text().startswith("threshold,precision,recall\n")

    # independent path: the exported model's CAMs as .npy files, scored by `wsol evaluate-scoremaps`
    network, _ = load_exported(layout.export("synth", "resnet50", "cam") / "model.ts")
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
                 "--out", str(tmp_path / "standalone.json")]) == 0
    standalone = json.loads((tmp_path / "standalone.json").read_text())
    assert standalone["maxboxacc_v2"] == pytest.approx(metrics["maxboxacc_v2"], abs=1e-9)
    assert standalone["top1_loc"] == pytest.approx(metrics["top1_loc"], abs=1e-9)
    assert standalone["top1_cls"] == pytest.approx(metrics["top1_cls"], abs=1e-9)

    run_id = json.loads((layout.run("synth", "resnet50", "cam") / "model.json").read_text())["mlflow_run_id"]
    run = MlflowClient(f"sqlite:///{layout.mlflow_db}").get_run(run_id)
    assert run.data.metrics["test_maxboxacc_v2"] == pytest.approx(metrics["maxboxacc_v2"])
