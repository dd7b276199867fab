"""The report: the paper's tables with intervals and the best of each column in bold, the rows that
frame every method (floor, pretrained features, few-shot) and where each method sits between them,
paired differences (each computed once), flat τ* marked, per-class results, where the CAMs go, training
cost and curves, the test images, galleries of outcomes, the terminal summary, and the plots' data."""

import csv
import json
import os
import re

import cv2
import numpy as np
import pytest

from pipeline.dag.paths import Layout
from pipeline.evaluation.evaluate import evaluate, evaluate_baseline
from pipeline.evaluation.reference_rows import evaluate_features
from pipeline.formats.records import RecordError
from pipeline.formats.run_cost import RunCost
from pipeline.formats.search_result import SearchResult
from pipeline.metrics import BoxRecords
from pipeline.report import report as report_module
from pipeline.report.experiment_page import publish, where
from pipeline.report.gallery import box_outcomes, classify, pick_outcomes
from pipeline.report.report import Report, Runs, build_report, flat_span, terminal_summary, write_plot_data
from pipeline.train.few_shot import few_shot
from pipeline.train.pretrain import pretrain
from tests.conftest import SAVED_METHODS
from tests.helpers import config

IOUS = (30, 50, 70)
COST = {"wall_s": 150.0, "images_per_s": 12.34, "device": "cpu", "workers": 1, "epochs": 3}
HISTORY = "epoch,loss,train_top1_cls,val_top1_cls,grad/clipped_steps,val_maxboxacc_v2\n1,0.9,50,60,2,10.5\n2,1.2,75,80,1,12.25\n"
# ICL's history also has each tap's attention figures (one tap here)
FIGURES = {"negative": (0.5, 0.0), "drop_empty": (0.25, 0.03), "drop_area": (0.1, 0.15), "variation": (0.2, 0.41),
           "val_auc_attention": (0.5, 0.8125), "val_auc_channel_mean": (0.7, 0.75)}
ICL_HISTORY = "\n".join(line + "," + ",".join(f"attention/layer3.0/{k}" if i == 0 else str(v[i - 1]) for k, v in FIGURES.items())
                        for i, line in enumerate(HISTORY.strip().splitlines())) + "\n"


def _cells(table: str, *first: str) -> list[str]:
    """The cells of the table's row that starts with ``first``, after them."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if tuple(cells[:len(first)]) == first:
            return cells[len(first):]
    raise AssertionError(f"no row {first} in\n{table}")


def _dict_rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _csv_rows(path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _value(cell: str) -> str:
    """A cell's value, bold marks kept, without its interval."""
    return cell.split(" [")[0]


def test_the_report_has_the_paper_tables_the_floor_the_cost_and_a_labelled_gallery(saved_project):
    layout, cfg, _ = saved_project
    for method in SAVED_METHODS:
        evaluate(cfg, layout, "resnet50", method, 0)
    floor = evaluate_baseline(cfg, layout)
    pretrain(cfg, layout, "resnet50")  # random init: its pretrain.json says so
    evaluate_features(cfg, layout, "resnet50")
    few_shot(cfg.model_copy(update={"few_shot": cfg.few_shot.model_copy(update={"epochs": 1})}), layout, "resnet50")
    with pytest.raises(RecordError, match="cost.json"):  # the train stage writes it: the report needs it
        build_report(cfg, layout)
    for method in SAVED_METHODS:
        (layout.run("synth", "resnet50", method, 0) / "cost.json").write_text(json.dumps(COST))
        (layout.run("synth", "resnet50", method, 0) / "history.csv").write_text(ICL_HISTORY if method == "icl" else HISTORY)
    path, made = build_report(cfg, layout)
    text = path.read_text()
    summary = terminal_summary(made, path, layout, where(publish(cfg, layout, path)))  # what the stage prints last
    assert "Report: report/synth/report.md" in summary and "dvc metrics show" in summary
    assert ("mlflow ui --backend-store-uri sqlite:///mlflow.db" in summary and "runs?viewStateShareKey=headline&"
            "workflowType=machine_learning" in summary) or os.environ.get("MLFLOW_TRACKING_URI")
    assert "| CAM |" in summary and "| Center Gaussian (floor) |" in summary and "This run " in summary
    made = re.search(r"Made by commit (.+) on (\d{4}-\d\d-\d\d) \d\d:\d\d UTC; this machine: .+, (\d+) cores; the runs "
                     r"trained on: (.+)\.", text)  # provenance
    assert made and made[1] == "not a git checkout" and made[3] == str(os.cpu_count()) and made[4] == "cpu"
    outside_code = re.sub(r"`[^`]*`", "", text)
    assert not re.findall(r"<[^>\s]*>", outside_code)  # a path's <run> outside a code span is an HTML tag: invisible
    for heading in ("MaxBoxAccV2 (Table 4 layout)", "MaxBoxAcc at each IoU (Table 5 layout)", "Top-1 localization",
                    "Top-1 classification (Table 7 layout)", "PxAP", "The paper's claim: paired differences in MaxBoxAccV2",
                    "Where the CAMs go (the failure modes as numbers)", "Training", "Cost",
                    "Between the floor, the pretrained features and the few-shot row", "The backbones before WSOL training",
                    "The test images", "Per class", "Optimiser settings"):
        assert f"## {heading}" in text
    metrics = {m: json.loads((layout.results("synth", "resnet50", m, 0) / "metrics.json").read_text())
               for m in SAVED_METHODS}
    values = {m: r["maxboxacc_v2"] for m, r in metrics.items()}
    table = text.split("## MaxBoxAccV2 (Table 4 layout)")[1].split("##")[0]
    assert "| Method | ResNet50 |\n" in table  # one backbone: no Mean column
    best = max(values, key=values.get)
    bar = max(floor["maxboxacc_v2"], json.loads((layout.features("synth", "resnet50") / "metrics.json").read_text())["maxboxacc_v2"])
    for method, name in (("cam", "CAM"), ("icl", "Ours (ICL)")):
        bold = method == best and len(set(values.values())) > 1 and values[method] > bar  # above the floor and the features
        shown = f"**{values[method]:.2f}**" if bold else f"{values[method]:.2f}"
        low, high = metrics[method]["ci95"]["maxboxacc_v2"]
        assert f"| {name} | {shown} [{low:.1f}, {high:.1f}] |" in table
    low, high = floor["ci95"]["maxboxacc_v2"]
    assert f"| Center Gaussian (floor) | {floor['maxboxacc_v2']:.2f} [{low:.1f}, {high:.1f}] |" in table
    for row, folder in (("Pretrained features", layout.features("synth", "resnet50")),
                        ("Few-shot (train-fullsup masks)", layout.few_shot("synth", "resnet50"))):
        written = json.loads((folder / "metrics.json").read_text())
        low, high = written["ci95"]["maxboxacc_v2"]
        assert f"| {row} | {written['maxboxacc_v2']:.2f} [{low:.1f}, {high:.1f}] |" in table
    assert _cells(text.split("## The backbones before WSOL training")[1], "ResNet50") == ["random init", "-", "-", "-", "-"]
    detail = text.split("## MaxBoxAcc at each IoU")[1].split("\n## ")[0]
    for method, name in (("cam", "CAM"), ("icl", "Ours (ICL)")):
        run = metrics[method]
        thresholds = ["–" if run[f"maxboxacc_{d}"] == 0 else f"{run['optimal_threshold'][str(d)]:.2f}" for d in IOUS]
        assert _cells(detail, name, "ResNet50")[-3:] == thresholds
    paired = text.split("## The paper's claim")[1].split("\n## ")[0]
    assert f"| Ours (ICL) | CAM | ResNet50 | {values['icl'] - values['cam']:+.2f} |" in paired
    assert "the paper's claim" in paired  # a verdict in words
    regions = text.split("## Where the CAMs go")[1].split("\n## ")[0]
    assert "| CAM on part |" in regions.replace("CAM on background | CAM on context | CAM on body | ", "")
    cost = text.split("## Cost")[1].split("\n## ")[0]
    assert _cells(cost, "CAM", "ResNet50") == ["2.5 min", "12.3", "cpu", "1", "3"]
    assert _cells(cost, "Few-shot (train-fullsup masks)", "ResNet50")[2:] == ["cpu", "1", "1"]
    training = text.split("## Training")[1].split("\n## ")[0]
    assert _cells(training, "CAM", "ResNet50") == ["1.33", "75.0", "80.0", "3"]  # loss 1.2 / 0.9; 2 + 1 clipped
    assert _cells(training, "Ours (ICL)", "ResNet50", "layer3.0") == ["0.0", "3.0", "15.0", "0.41", "0.812", "0.750"]

    report = layout.report("synth")
    for picture in ("dataset.png", "training.png", "boxacc_resnet50.png", "gallery_resnet50.png"):
        assert f"]({picture})" in text and (report / picture).is_file()
    assert text.index("](dataset.png)") < text.index("## MaxBoxAccV2")  # the test images near the top
    assert "**Red: the ground-truth box; green: the predicted box**" in text
    assert "(best, median, too large)" in text  # report.gallery_images 3: the first three outcomes
    gallery = cv2.imread(str(report / "gallery_resnet50.png"))
    tiles_width = 3 * 224 + 2 * 4  # a column per outcome, 4 px gaps
    left = gallery.shape[1] - tiles_width
    assert left > 0 and (gallery[:, :left] < 255).any()  # the methods' names on the left
    assert gallery.shape[0] > 2 * 224 + 4 + 24 and (gallery[:20, left:] < 255).any()  # outcomes on top, a legend below
    legend = gallery[-24:]  # BGR: ground truth red and predicted green, drawn exactly
    assert (legend == (30, 30, 220)).all(axis=2).any() and (legend == (30, 200, 30)).all(axis=2).any()
    outcomes = text.split("fall in each outcome:")[1].split("\n## ")[0]
    counts = [int(c) for c in _cells(outcomes, "CAM")]
    assert len(counts) == 4 and sum(counts) == 4 * 3  # success and three failure modes of every test image
    classes = text.split("## Per class")[1].split("\n## ")[0]
    assert [_value(c) for c in _cells(classes, "All", "12")] == [
        f"{metrics[m]['maxboxacc_50']:.2f}" for m in SAVED_METHODS] + [f"{metrics[m]['top1_cls']:.2f}" for m in SAVED_METHODS]

    runs = {"CAM": "cam", "Ours (ICL)": "icl"}
    assert _csv_rows(report / "plots" / "val_maxboxacc_v2.csv") == [["run", "method", "epoch", "val_maxboxacc_v2"]] + [
        [f"ResNet50 {name} seed 0", name, epoch, value] for name in runs for epoch, value in (("1", "10.5"), ("2", "12.25"))]
    folders = {(f"ResNet50 {name} seed 0", name): layout.results("synth", "resnet50", m, 0) for name, m in runs.items()}
    folders["Center Gaussian (floor)", "Center Gaussian (floor)"] = layout.baseline("synth")
    folders["ResNet50 Pretrained features", "Pretrained features"] = layout.features("synth", "resnet50")
    folders["ResNet50 Few-shot (train-fullsup masks)", "Few-shot (train-fullsup masks)"] = layout.few_shot("synth", "resnet50")
    evaluated = {name: _dict_rows(folder / "boxacc.csv") for name, folder in folders.items()}
    assert _csv_rows(report / "plots" / "boxacc.csv") == [["run", "method", "iou", "threshold", "boxacc"]] + [
        [*name, str(d), r["threshold"], r[f"iou_{d}"]] for name, table in evaluated.items() for d in IOUS for r in table]
    pr = {name: _dict_rows(folder / "pr_curve.csv") for name, folder in folders.items()}
    assert all(pr.values())  # synth has masks
    assert _csv_rows(report / "plots" / "pr_curve.csv") == [["run", "method", "recall", "precision"]] + [
        [*name, r["recall"], r["precision"]] for name, table in pr.items() for r in table]


def _runs(accuracy: dict[int, float], images: int = 4) -> Runs:
    """One seed whose MaxBoxAcc at each IoU is ``accuracy`` (a multiple of 100 / images): that share of
    the images has a hit at τ 0.75, none at τ 0.25; its intervals ±1 around each value."""
    hits = np.zeros((images, len(IOUS), 2), bool)
    for k, delta in enumerate(IOUS):
        hits[:round(accuracy[delta] * images / 100), k, 1] = True
    records = BoxRecords(np.array([f"{i}.png" for i in range(images)]), np.array([0.25, 0.75]), IOUS,
                         np.packbits(hits, axis=2), np.ones(images, bool))
    values = {f"maxboxacc_{d}": float(a) for d, a in accuracy.items()}
    values["maxboxacc_v2"] = float(np.mean(list(accuracy.values())))
    metrics = {**values, "ci95": {key: [v - 1, v + 1] for key, v in values.items()},
               "optimal_threshold": {str(d): 0.75 if a else 0.0 for d, a in accuracy.items()},
               "bootstrap": {"samples": 200, "seed": 0}}
    return Runs([metrics], [records], [])


ACCURACY = {("resnet18", "cam"): {30: 75, 50: 50, 70: 0}, ("resnet18", "icl"): {30: 50, 50: 25, 70: 0},
            ("resnet50", "cam"): {30: 25, 50: 25, 70: 0}, ("resnet50", "icl"): {30: 100, 50: 50, 70: 25}}
FLOOR = {30: 50, 50: 25, 70: 0}  # MaxBoxAccV2 25.00: below each backbone's best method
ABOVE_ALL = {30: 100, 50: 100, 70: 100}  # a floor above every method
FEATURES = {30: 25, 50: 0, 70: 0}  # MaxBoxAccV2 8.33
FEW_SHOT = {30: 100, 50: 75, 70: 50}  # MaxBoxAccV2 75.00


def _report(backbones: list[str], seeds: tuple[int, ...] = (0,), costs: dict | None = None, floor: dict = FLOOR) -> Report:
    cfg = config(**{"backbones": backbones, "methods": ["cam", "icl"], "seeds": list(seeds)})
    runs = {key: _runs(accuracy) for key, accuracy in ACCURACY.items() if key[0] in backbones}
    references = {"Center Gaussian (floor)": dict.fromkeys(backbones, _runs(floor)),
                  "Pretrained features": {b: _runs(FEATURES) for b in backbones},
                  "Few-shot (train-fullsup masks)": {b: _runs(FEW_SHOT) for b in backbones}}
    return Report(cfg, runs, references, costs or {}, {})


def test_each_method_is_placed_between_the_floor_the_features_and_the_few_shot_row():
    section = "\n".join(_report(["resnet18"], floor=ABOVE_ALL).framing_section())
    # ResNet18 CAM: MaxBoxAccV2 41.67: -58.33 against the floor, +33.33 against the features, -33.33 against
    # the few-shot row; it closes (41.67 - 8.33) / (75 - 8.33) = 50 % of the gap from the features to the few-shot row
    cells = _cells(section, "CAM", "ResNet18")
    assert [c.split(" [")[0] for c in cells[:3]] == ["-58.33", "+33.33", "-33.33"] and cells[3] == "50 %"
    # ICL on ResNet18: 25.00, so (25 - 8.33) / 66.67 = 25 %
    assert _cells(section, "Ours (ICL)", "ResNet18")[3] == "25 %"
    assert "- CAM (ResNet18): below the floor, above the pretrained features, below the few-shot row." in section
    assert "- The pretrained features (ResNet18) minus the floor: -91.67 [" in section  # 8.33 - 100


def test_the_best_method_of_each_column_is_bold_and_several_backbones_get_a_mean_column():
    table = _report(["resnet18", "resnet50"]).metric_table("maxboxacc_v2")
    assert table.splitlines()[0] == "| Method | ResNet18 | ResNet50 | Mean |"
    # MaxBoxAccV2: CAM 41.67 and 16.67, mean 29.17; ICL 25.00 and 58.33, mean 41.67
    assert [_value(c) for c in _cells(table, "CAM")] == ["**41.67**", "16.67", "29.17"]
    assert [_value(c) for c in _cells(table, "Ours (ICL)")] == ["25.00", "**58.33**", "**41.67**"]
    assert [_value(c) for c in _cells(table, "Center Gaussian (floor)")] == ["25.00"] * 3
    assert [_value(c) for c in _cells(table, "Pretrained features")] == ["8.33"] * 3  # the Mean pools both backbones
    assert [_value(c) for c in _cells(table, "Few-shot (train-fullsup masks)")] == ["75.00"] * 3
    low, high = map(float, _cells(table, "Ours (ICL)")[2].split(" [")[1].strip("]").split(", "))
    assert low <= 41.67 <= high  # the interval of the mean over backbones, from the pooled records

    alone = _report(["resnet18"]).metric_table("maxboxacc_v2")
    assert alone.splitlines()[0] == "| Method | ResNet18 |"
    assert [_value(c) for c in _cells(alone, "CAM")] == ["**41.67**"]


def test_the_per_iou_table_bolds_each_backbones_best_and_has_no_threshold_where_nothing_is_correct():
    table = _report(["resnet18", "resnet50"]).detail_table()
    # MaxBoxAcc@30, @50, @70, MaxBoxAccV2, then tau*@30, @50, @70; a tie (0 and 0 at IoU 70 on ResNet18) bolds none
    assert [_value(c) for c in _cells(table, "CAM", "ResNet18")] == [
        "**75.00**", "**50.00**", "0.00", "**41.67**", "0.75", "0.75", "–"]
    assert [_value(c) for c in _cells(table, "Ours (ICL)", "ResNet18")] == [
        "50.00", "25.00", "0.00", "25.00", "0.75", "0.75", "–"]
    assert [_value(c) for c in _cells(table, "CAM", "ResNet50")] == [
        "25.00", "25.00", "0.00", "16.67", "0.75", "0.75", "–"]
    assert [_value(c) for c in _cells(table, "Ours (ICL)", "ResNet50")] == [
        "**100.00**", "**50.00**", "**25.00**", "**58.33**", "0.75", "0.75", "0.75"]
    assert [_value(c) for c in _cells(table, "Center Gaussian (floor)", "-")] == [
        "50.00", "25.00", "0.00", "25.00", "0.75", "0.75", "–"]
    assert [_value(c) for c in _cells(table, "Pretrained features", "ResNet50")] == [
        "25.00", "0.00", "0.00", "8.33", "0.75", "–", "–"]


def test_no_bold_falls_on_a_value_the_floor_or_the_pretrained_features_reach():
    # a floor above every method: the best of each column is no longer bold, in either table
    above = _report(["resnet18", "resnet50"], floor=ABOVE_ALL)
    assert "**" not in above.metric_table("maxboxacc_v2") + above.detail_table()
    # a floor equal to ResNet18 CAM's 50.00 at IoU 50 (and 41.67 MaxBoxAccV2): CAM, best there, is not bold
    # at IoU 50 or in MaxBoxAccV2, still bold at IoU 30 (75 > 50)
    level = _report(["resnet18"], floor={30: 50, 50: 50, 70: 25})
    assert [_value(c) for c in _cells(level.detail_table(), "CAM", "ResNet18")][:4] == ["**75.00**", "50.00", "0.00", "41.67"]
    # the pretrained features are a bar too: ResNet18's best at IoU 30 (75) against features at 75
    features = _report(["resnet18"])
    features.references["Pretrained features"] = {"resnet18": _runs({30: 75, 50: 0, 70: 0})}
    assert _value(_cells(features.detail_table(), "CAM", "ResNet18")[0]) == "75.00"
    # the few-shot row (full supervision) is no bar: it is above every method here and bold stays
    assert "**" in _report(["resnet18"]).metric_table("maxboxacc_v2")


def test_the_summary_says_the_best_method_the_claim_and_the_rows_in_one_paragraph():
    heading, _, paragraph, _ = _report(["resnet18"]).summary()
    assert heading == "## Summary"
    assert paragraph.startswith("This run does not support the paper's claim")  # ICL 25.00 against CAM 41.67
    assert "On ResNet18 the best MaxBoxAccV2 is CAM's 41.67;" in paragraph
    assert re.search(r"\d of 2 methods are above the floor \(25\.00\) beyond the test set's noise, none reaches the "
                     r"few-shot row \(75\.00\)\.", paragraph)


def test_the_cost_section_gives_each_runs_mean_over_seeds():
    costs = {("resnet18", "cam"): [RunCost(60.0, 10.0, "cpu", 1, 3), RunCost(120.0, 20.0, "cpu", 1, 4)],
             ("resnet18", "icl"): [RunCost(200.0, 5.0, "NVIDIA H200", 2, 5), RunCost(400.0, 7.0, "NVIDIA H200", 2, 5)]}
    section = "\n".join(_report(["resnet18"], seeds=(0, 1), costs=costs).cost_section())
    assert section.startswith("## Cost")
    assert "| Method | Backbone | Wall time | Images/s | Device | Workers | Epochs |" in section
    assert _cells(section, "CAM", "ResNet18") == ["90 s", "15.0", "cpu", "1", "3, 4"]
    assert _cells(section, "Ours (ICL)", "ResNet18") == ["5.0 min", "6.0", "NVIDIA H200", "2", "5"]


def test_the_plot_data_holds_every_run_and_point_as_the_stages_wrote_them(tmp_path):
    layout = Layout(tmp_path)
    cfg = config(**{"backbones": ["resnet18"], "methods": ["cam", "icl"], "seeds": [0, 1]})
    header = "threshold,iou_30,iou_50,iou_70\n"
    boxacc = {"cam": header + "0.0000,8.5000,0.0000,0.0000\n0.5000,60.0000,6.2500,0.7500\n",
              "icl": header + "0.0000,9.0000,1.0000,0.0000\n"}
    pr_curve = {"cam": "threshold,precision,recall\n1.0000,0.900000,0.010000\n",
                "icl": "threshold,precision,recall\n"}  # header only: no masks
    for method in ("cam", "icl"):
        for seed in (0, 1):
            run, results = (layout.run("synth", "resnet18", method, seed),
                            layout.results("synth", "resnet18", method, seed))
            run.mkdir(parents=True)
            results.mkdir(parents=True)
            (run / "history.csv").write_text(f"epoch,loss,val_maxboxacc_v2\n1,0.5,{seed + 20}.5\n")
            (results / "boxacc.csv").write_text(boxacc[method])
            (results / "pr_curve.csv").write_text(pr_curve[method])
    floor = layout.baseline("synth")
    floor.mkdir(parents=True)
    (floor / "boxacc.csv").write_text(header + "0.2500,30.0000,10.0000,1.0000\n")
    (floor / "pr_curve.csv").write_text("threshold,precision,recall\n")
    for row in (layout.features("synth", "resnet18"), layout.few_shot("synth", "resnet18")):
        row.mkdir(parents=True)
        (row / "boxacc.csv").write_text(header + "0.5000,40.0000,20.0000,2.0000\n")
        (row / "pr_curve.csv").write_text("threshold,precision,recall\n")
    write_plot_data(cfg, layout, tmp_path / "plots")

    runs = {"ResNet18 CAM seed 0": "cam", "ResNet18 CAM seed 1": "cam", "ResNet18 Ours (ICL) seed 0": "icl",
            "ResNet18 Ours (ICL) seed 1": "icl"}
    assert _csv_rows(tmp_path / "plots" / "val_maxboxacc_v2.csv") == [
        ["run", "method", "epoch", "val_maxboxacc_v2"],
        ["ResNet18 CAM seed 0", "CAM", "1", "20.5"], ["ResNet18 CAM seed 1", "CAM", "1", "21.5"],
        ["ResNet18 Ours (ICL) seed 0", "Ours (ICL)", "1", "20.5"], ["ResNet18 Ours (ICL) seed 1", "Ours (ICL)", "1", "21.5"]]
    shown = {"cam": "CAM", "icl": "Ours (ICL)"}
    points = {"cam": [["30", "0.0000", "8.5000"], ["30", "0.5000", "60.0000"], ["50", "0.0000", "0.0000"],
                      ["50", "0.5000", "6.2500"], ["70", "0.0000", "0.0000"], ["70", "0.5000", "0.7500"]],
              "icl": [["30", "0.0000", "9.0000"], ["50", "0.0000", "1.0000"], ["70", "0.0000", "0.0000"]]}
    floor_points = [["30", "0.2500", "30.0000"], ["50", "0.2500", "10.0000"], ["70", "0.2500", "1.0000"]]
    assert _csv_rows(tmp_path / "plots" / "boxacc.csv") == [["run", "method", "iou", "threshold", "boxacc"]] + [
        [name, shown[method], *point] for name, method in runs.items() for point in points[method]] + [
        ["Center Gaussian (floor)", "Center Gaussian (floor)", *point] for point in floor_points] + [
        [f"ResNet18 {row}", row, str(d), "0.5000", value] for row in ("Pretrained features", "Few-shot (train-fullsup masks)")
        for d, value in ((30, "40.0000"), (50, "20.0000"), (70, "2.0000"))]
    assert _csv_rows(tmp_path / "plots" / "pr_curve.csv") == [
        ["run", "method", "recall", "precision"], ["ResNet18 CAM seed 0", "CAM", "0.010000", "0.900000"],
        ["ResNet18 CAM seed 1", "CAM", "0.010000", "0.900000"]]
    template = json.loads((tmp_path / "plots" / "by_run.json").read_text())  # the charts' legend: params' methods, rows
    scale = template["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"], strict=True)) == {
        "Ours (ICL)": "#d62728", "CAM": "#1f77b4", "Center Gaussian (floor)": "#000000", "Pretrained features": "#7f7f7f",
        "Few-shot (train-fullsup masks)": "#b8860b"}


TAU = np.round(np.arange(0, 1, 0.05), 2)  # 20 thresholds, 0.00 ... 0.95


@pytest.mark.parametrize(("curve", "span"), [
    ({0.30: 10.0, 0.35: 9.5, 0.40: 9.2, 0.45: 9.0, 0.50: 9.8, 0.55: 9.1, 0.60: 9.0}, (0.30, 0.60)),  # 9 to 10 over 0.3
    ({0.40: 10.0, 0.45: 9.5, 0.50: 8.9, 0.55: 9.9, 0.60: 9.9, 0.65: 9.9, 0.70: 9.9}, None),  # a dip cuts the span
    ({0.40: 10.0, 0.45: 9.0, 0.50: 9.0, 0.55: 9.0, 0.60: 9.0, 0.65: 9.0}, (0.40, 0.65)),  # 0.25 wide: flat
    ({0.40: 10.0, 0.45: 9.0, 0.50: 9.0, 0.55: 9.0, 0.60: 9.0}, None),  # 0.20 wide
    ({0.50: 60.0, 0.45: 55.0, 0.55: 58.0}, None),  # a peak
    ({}, (0.0, 0.95)),  # 0 everywhere
])
def test_a_tau_star_is_flat_where_boxacc_stays_within_a_point_of_its_max_over_a_quarter_of_tau(curve, span):
    boxacc = np.array([curve.get(float(t), 0.0) for t in TAU])
    assert flat_span(TAU, boxacc) == span


def test_the_per_iou_table_marks_a_flat_tau_star_and_says_over_which_span():
    report = _report(["resnet18"])
    # CAM at IoU 30: three of four images hit at both τ 0.25 and 0.75, so its curve is 75 over [0.25, 0.75]
    hits = report.runs["resnet18", "cam"].box[0].hits()
    hits[:3, 0, 0] = True
    records = report.runs["resnet18", "cam"].box[0]
    report.runs["resnet18", "cam"] = Runs(report.runs["resnet18", "cam"].metrics, [BoxRecords(
        records.image_ids, records.thresholds, records.deltas, np.packbits(hits, axis=2), records.classified)], [])
    table = report.detail_table()
    assert _cells(table, "CAM", "ResNet18")[-3:] == ["0.75†", "0.75", "–"]  # one hit image at IoU 50: 25 points off
    assert _cells(table, "Ours (ICL)", "ResNet18")[-3:] == ["0.75", "0.75", "–"]
    assert table.count("†") == 2
    assert "- † CAM, ResNet18, τ*@30: BoxAcc within 1 point of its max over τ in [0.25, 0.75]." in table


def test_the_per_class_table_splits_boxacc_at_the_runs_tau_star_and_top1_by_class(tmp_path):
    # six images of two classes; hits at IoU 50 at τ 0.5 (the run's τ*@50) for images 0, 1 and 4, at τ 0.25 for
    # 2 and 3 (not counted: another τ); images 1 and 5 wrongly classified
    folder = tmp_path / "run"
    (folder / "records").mkdir(parents=True)
    hits = np.zeros((6, 3, 2), bool)
    hits[[0, 1, 4], 1, 1] = True
    hits[[2, 3], 1, 0] = True
    BoxRecords(np.array([f"{i}.png" for i in range(6)]), np.array([0.25, 0.5]), IOUS, np.packbits(hits, axis=2),
               np.array([True, False, True, True, True, False])).save(folder / "records" / "box.npz")
    (folder / "metrics.json").write_text(json.dumps({"optimal_threshold": {"30": 0.25, "50": 0.5, "70": 0.25},
                                                     "bootstrap": {"samples": 10, "seed": 0}}))
    report = _report(["resnet18"])
    report.runs = {("resnet18", "cam"): Runs.load([folder])}
    classes = {"0.png": "disc", "1.png": "disc", "2.png": "disc", "3.png": "star", "4.png": "star", "5.png": "star"}
    section = "\n".join(report.class_section(classes))
    assert "| Class | Images | BoxAcc@50 CAM | Top-1 cls CAM |" in section
    assert _cells(section, "disc") == ["3", "66.67", "66.67"]
    assert _cells(section, "star") == ["3", "33.33", "66.67"]
    assert _cells(section, "All") == ["6", "50.00", "66.67"]


def test_the_gallery_shows_the_best_the_median_and_the_median_of_each_failure_mode():
    # IoU and predicted / GT box area per image: successes 0 and 1; too large 2, 3, 4; too small 5, 6; misplaced 7
    ious = np.array([0.9, 0.6, 0.3, 0.1, 0.2, 0.4, 0.3, 0.45])
    ratios = np.array([1.0, 1.2, 2.0, 5.0, 3.0, 0.5, 0.1, 1.9])
    assert {mode: list(np.flatnonzero(members)) for mode, members in classify(ious, ratios).items()} == {
        "success": [0, 1], "too large": [2, 3, 4], "too small": [5, 6], "misplaced": [7]}
    # IoUs sorted: 0.1 (3), 0.2 (4), 0.3 (2), 0.3 (6), 0.4 (5), 0.45 (7), 0.6 (1), 0.9 (0): the lower middle is image 6
    assert pick_outcomes(ious, ratios) == {"best": 0, "median": 6, "too large": 4, "too small": 6, "misplaced": 7}
    assert pick_outcomes(np.array([0.7, 0.8]), np.ones(2)) == {
        "best": 1, "median": 0, "too large": None, "too small": None, "misplaced": None}


def test_a_predicted_box_is_scored_against_the_gt_box_it_overlaps_most():
    gt = np.array([[0, 0, 9, 9], [50, 50, 69, 69]])  # 10x10 and 20x20 pixels, inclusive
    boxes = np.array([[0, 0, 19, 19], [55, 55, 64, 64], [100, 100, 100, 100]])
    ious, ratios = box_outcomes(boxes, [gt, gt, gt])
    assert np.allclose(ious, [100 / 400, 100 / 400, 0.0]) and np.allclose(ratios, [4.0, 100 / 400, 1 / 100])


def test_every_paired_difference_is_computed_once(monkeypatch):
    calls = []
    real = report_module.paired_difference
    monkeypatch.setattr(report_module, "paired_difference", lambda *args: calls.append(args) or real(*args))
    report = _report(["resnet18"])
    first = [report.summary(), report.paired_section(), report.framing_section()]
    # ICL against CAM and the three rows, CAM against the three rows, the features and the few-shot row against the floor
    assert len(calls) == 9
    assert [report.summary(), report.paired_section(), report.framing_section()] == first and len(calls) == 9


def test_the_optimiser_section_names_each_runs_settings_and_their_source():
    cfg = config(**{"backbones": ["resnet50"], "methods": ["cam", "icl"],
                    "backbone_settings.resnet50.pretrained": "IMAGENET1K_V1", "backbone_settings.resnet50.lr": 0.001,
                    "backbone_settings.resnet50.weight_decay": 1e-4, "train.lr_classifier_ratio": 10.0,
                    "method_settings.cam.optimiser": {"resnet50": {"lr": 2.322e-4, "source": "a published script"}}})
    unsearched = {(b, m): SearchResult("synth", b, m, 0) for b in cfg.backbones for m in cfg.methods}
    lines = report_module.optimiser_section(cfg, unsearched)
    assert "| ResNet50 | CAM | 0.0002322 | 0.002322 | 0.0001 | 6 | a published script |" in lines[-2]
    assert "| ResNet50 | Ours (ICL) | 0.001 | 0.01 | 0.0001 | 6 | backbone_settings.resnet50 |" in lines[-2]
    source = "searched: best of 30 trials on synth train-fullsup, val localization 61.25"
    chosen = {"method_settings.icl.optimiser.resnet50.lr": 0.004, "method_settings.icl.optimiser.resnet50.weight_decay": 5e-4,
              "method_settings.icl.optimiser.resnet50.lr_decay_epochs": 3, "method_settings.icl.optimiser.resnet50.source": source}
    searched = {**unsearched, ("resnet50", "icl"): SearchResult("synth", "resnet50", "icl", 30, chosen, 61.25, "run-id")}
    lines = report_module.optimiser_section(cfg, searched)
    assert f"| ResNet50 | Ours (ICL) | 0.004 | 0.04 | 0.0005 | 3 | {source} |" in lines[-2]
    assert "| ResNet50 | CAM | 0.0002322 | 0.002322 | 0.0001 | 6 | a published script |" in lines[-2]


def test_the_terminal_summary_comes_from_the_report_not_from_its_markdown(tmp_path):
    report, layout = _report(["resnet18"]), Layout(tmp_path)
    path = layout.report("synth") / "report.md"  # never written
    summary = terminal_summary(report, path, layout, "MLflow: here")
    lines = summary.splitlines()
    table = report.metric_table("maxboxacc_v2").splitlines()
    start = lines.index(table[0])
    assert lines[start:start + len(table)] == table and lines[start + len(table)] == report.summary()[2]
    assert lines[start - 1] == "MaxBoxAccV2 on test (%, 95 % interval over test images):"
    assert "Report: report/synth/report.md" in summary
