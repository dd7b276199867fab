"""What the DAG hands a user: exported networks, test results, the report, `wsol localize`, the
cluster configuration and the params files."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.data import prepare
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.evaluate import evaluate
from pipeline.export import ExportError, export, load_exported
from pipeline.localize import to_image_pixels
from pipeline.models import build_model
from pipeline.params_file import apply_fragment
from pipeline.paths import Layout
from pipeline.report import build_report
from pipeline.tracking import client_for, experiment_id, open_run
from pipeline.train.outputs import save_model
from tests.helpers import params

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cam", "icl")
TINY = {"backbones": ["resnet50"], "methods": list(METHODS), "datasets.synth.classes": 3,
        "datasets.synth.images_per_class": {"train": 2, "val": 2, "test": 4}, "data.crop": 48, "data.resize": 56,
        "report.gallery_images": 3}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project whose train stage has 'run': untrained models saved as training saves them."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(params(**TINY)))
    layout = Layout(root)
    cfg = load_config(root / "params.yaml")
    prepare.download(cfg, layout)
    info = prepare.split(cfg, layout)
    client = client_for(layout)
    experiment = experiment_id(client, "synth", layout)
    for k, method in enumerate(METHODS):
        torch.manual_seed(k)
        model = build_model("resnet50", method, info.num_classes, cfg)
        run_id = open_run(client, experiment, f"synth-resnet50-{method}", f"key-{method}", {}, {})
        save_model(layout.run("synth", "resnet50", method), model.state_dict(), {
            "dataset": "synth", "backbone": "resnet50", "method": method, "num_classes": info.num_classes,
            "class_names": list(info.class_names), "cam_threshold": 0.4, "mlflow_run_id": run_id,
            "config": cfg.model_dump(mode="json")})
        export(layout.run("synth", "resnet50", method), layout.export("synth", "resnet50", method), cfg.export.tolerance)
    return layout, cfg, info


def test_exports_match_the_eager_network_and_carry_their_metadata(project):
    layout, cfg, info = project
    folder = layout.export("synth", "resnet50", "icl")
    report = json.loads((folder / "export.json").read_text())
    for kind in ("torchscript", "onnx"):
        assert max(report[kind]["max_abs_difference"].values()) <= cfg.export.tolerance
    network, meta = load_exported(folder / "model.ts")
    assert meta["input_size"] == 48 and meta["class_names"] == list(info.class_names) and meta["cam_threshold"] == 0.4
    logits, cams = network(torch.randn(5, 3, 48, 48), torch.tensor([-1, 0, 1, 2, -1]))  # another batch size
    assert logits.shape == (5, 3) and cams.shape == (5, 224, 224)
    # ICL's attention branch acts only in training: the export leaves its weights out
    assert (folder / "model.ts").stat().st_size < 0.8 * (layout.run("synth", "resnet50", "icl") / "model.pt").stat().st_size


def test_an_export_beyond_the_tolerance_is_refused(project, tmp_path):
    layout, _, _ = project
    with pytest.raises(ExportError, match=r"model\.(ts|onnx): exported outputs differ from the eager model by"):
        export(layout.run("synth", "resnet50", "cam"), tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()


def test_evaluation_equals_the_standalone_evaluator_and_reaches_mlflow(project, tmp_path):
    layout, cfg, info = project
    metrics = evaluate(cfg, layout, "resnet50", "cam")
    results = layout.results("synth", "resnet50", "cam")
    assert json.loads((results / "metrics.json").read_text()) == metrics
    assert len((results / "boxacc.csv").read_text().splitlines()) == 1 + 100  # header + one row per threshold
    assert (results / "pr_curve.csv").read_text().startswith("threshold,precision,recall\n")

    # independent path: the eager model's CAMs as .npy files, scored by `wsol evaluate-scoremaps`
    network, _ = load_exported(layout.export("synth", "resnet50", "cam") / "model.ts")
    from pipeline.data.loading import SplitImages, eval_transform

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


def test_the_report_has_the_paper_tables_and_a_gallery(project):
    layout, cfg, _ = project
    for method in METHODS:
        evaluate(cfg, layout, "resnet50", method)
    text = build_report(cfg, layout).read_text()
    for heading in ("MaxBoxAccV2 (Table 4 layout)", "MaxBoxAcc at each IoU (Table 5 layout)", "Top-1 localization",
                    "Top-1 classification (Table 7 layout)", "PxAP"):
        assert f"## {heading}" in text
    values = {m: json.loads((layout.results("synth", "resnet50", m) / "metrics.json").read_text())["maxboxacc_v2"] for m in METHODS}
    table = text.split("## MaxBoxAccV2 (Table 4 layout)")[1].split("##")[0]
    best = max(values, key=values.get)
    for method, name in (("cam", "CAM"), ("icl", "Ours (ICL)")):
        shown = f"**{values[method]:.2f}**" if method == best and len(set(values.values())) > 1 else f"{values[method]:.2f}"
        assert f"| {name} | {shown} |" in table
    gallery = cv2.imread(str(layout.report("synth") / "gallery_resnet50.jpg"))
    assert gallery.shape[0] > 2 * 224 and gallery.shape[1] > 3 * 224  # a row per method, a column per image


def test_localize_prints_boxes_and_overlays_and_reports_unreadable_images(project, tmp_path, capsys):
    layout, _, info = project
    good = info.image_path("test", info.metadata("test").image_ids[0])
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(good)), (300, 200)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    model = layout.export("synth", "resnet50", "cam") / "model.ts"
    status = main(["localize", str(good), str(broken), str(big), "--model", str(model), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert f"{broken}: cannot decode image" in captured.err
    found = json.loads(captured.out)
    assert [f["image"] for f in found] == [str(good), str(big)]
    for item, (width, height) in zip(found, [(96, 96), (300, 200)]):
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height
        assert item["class_name"] in info.class_names and 0 < item["score"] <= 1
        assert Path(item["overlay"]).is_file()


def test_boxes_go_back_to_the_image_pixels():
    assert to_image_pixels((0, 0, 223, 223), 448, 112) == (0, 0, 447, 111)
    assert to_image_pixels((112, 56, 167, 111), 448, 448) == (224, 112, 335, 223)


def test_the_cluster_config_is_one_the_ray_launcher_accepts():
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = yaml.safe_load((ROOT / "infra" / "cluster.yaml").read_text())
    validate_config(prepare_config(cluster))  # what `ray up` does: defaults filled in, then Ray's schema and checks
    assert cluster["provider"]["type"] == "aws" and cluster["head_node_type"] in cluster["available_node_types"]
    assert cluster["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert cluster["file_mounts"] == {"/home/ray/wsol": "."}
    assert any("pip install" in c and "/home/ray/wsol" in c for c in cluster["setup_commands"])
    assert all(t["resources"] == {} and "InstanceType" in t["node_config"] for t in cluster["available_node_types"].values())


def test_every_shipped_params_file_validates(tmp_path):
    load_config(ROOT / "params.yaml")
    for fragment in sorted((ROOT / "infra" / "params").glob("*.yaml")):
        target = tmp_path / f"{fragment.stem}.yaml"
        shutil.copy(ROOT / "params.yaml", target)
        apply_fragment(fragment, target)
        config = load_config(target)
        assert len(config.backbones) == 3 and len(config.methods) == 7
        assert "# The benchmark's one configuration" in target.read_text()  # comments kept


def test_a_bad_fragment_names_the_key_and_leaves_params_untouched(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    before = target.read_text()
    (tmp_path / "bad.yaml").write_text("train:\n  lr_classifier_ratio: -1\n  warmup: 3\n")
    with pytest.raises(ConfigError) as error:
        apply_fragment(tmp_path / "bad.yaml", target)
    assert "train.lr_classifier_ratio: Input should be greater than 0" in str(error.value)
    assert "train.warmup: Extra inputs are not permitted" in str(error.value)
    assert target.read_text() == before


def test_malformed_params_files_name_the_file_line_and_key(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text("dataset: synth\nbackbones: [resnet50\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:3:1: not valid YAML"):
        load_config(target)
    data = params(**{"dataset": "mnist", "backbones": ["resnet18"], "evaluate.iou_thresholds": [30, 70]})
    target.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_config(target)
    message = str(error.value)
    assert "dataset: Input should be 'synth', 'cub', 'ilsvrc', 'openimages' or 'custom' (got 'mnist')" in message
    assert "backbones.0: Input should be 'vgg16', 'resnet50' or 'inception_v3'" in message
    assert "evaluate: Value error, iou_thresholds must contain 50" in message
