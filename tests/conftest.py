"""Fixtures shared across test files: one tiny project whose train stage has 'run'."""

import pytest
import torch

from pipeline.dag.tracking import client_for, experiment_id, open_run
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.export.export import export
from pipeline.formats.run_folder import RunMeta, save_run
from pipeline.formats.search_result import SearchResult, write_search
from pipeline.models import build_model
from pipeline.settings.config import load_config
from tests.helpers import make_project

SAVED_METHODS = ("cam", "icl")
SAVED = {"backbones": ["resnet50"], "methods": list(SAVED_METHODS), "datasets.synth.classes": 3,
         "datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 4}, "data.crop": 48, "data.resize": 56,
         "report.gallery_images": 3}


@pytest.fixture(scope="session")
def saved_project(tmp_path_factory):
    """(layout, config, dataset info) of a project whose cam and icl runs are untrained models saved
    and exported as the train and export stages save and export them, each with an MLflow run, after
    searches of no trials (the search stage's result where a method does not search)."""
    layout = make_project(tmp_path_factory.mktemp("project"), **SAVED)
    cfg = load_config(layout.root / "params.yaml")
    info = DatasetInfo.load(layout.split("synth"))
    client = client_for(layout)
    experiment = experiment_id(client, "synth", layout)
    for k, method in enumerate(SAVED_METHODS):
        torch.manual_seed(k)
        write_search(layout.search("synth", "resnet50", method), SearchResult("synth", "resnet50", method, 0))
        model = build_model("resnet50", method, info.num_classes, cfg)
        run_id = open_run(client, experiment, f"synth-resnet50-{method}", f"key-{method}", {}, {}, layout.root)
        save_run(layout.run("synth", "resnet50", method, 0), model.state_dict(),
                 RunMeta(dataset="synth", backbone="resnet50", method=method, num_classes=info.num_classes,
                         class_names=list(info.class_names), cam_threshold=0.4,
                         settings=cfg.run("resnet50", method).as_json(), mlflow_run_id=run_id))
        export(layout.run("synth", "resnet50", method, 0), layout.export("synth", "resnet50", method, 0), cfg.export.tolerance)
    return layout, cfg, info
