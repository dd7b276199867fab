"""The report: the paper's tables with intervals and the best of each column in bold, the rows that
frame every method (floor, pretrained features, few-shot) and where each method sits between them,
paired differences, where the CAMs go, training cost, labelled galleries, and the plots' data."""

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
from pipeline.metrics import BoxRecords
from pipeline.report.report import Report, Runs, build_report, terminal_summary, write_plot_data
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
    text = build_report(cfg, layout).read_text()
    summary = terminal_summary(layout.report("synth") / "report.md", layout)  # what the stage prints last
    assert "Report: report/synth/report.md" in summary and "dvc metrics show" in summary
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in summary or os.environ.get("MLFLOW_TRACKING_URI")
    assert "| CAM |" in summary and "| Center Gaussian (floor) |" in summary and "This run " in summary
    made = re.search(r"Made by commit (.+) on (\d{4}-\d\d-\d\d) \d\d:\d\d UTC; this machine: .+, (\d+) cores; the runs "
                     r"trained on: (.+)\.", text)  # provenance
    assert made and made[1] == "not a git checkout" and made[3] == str(os.cpu_count()) and made[4] == "cpu"
    outside_code = re.sub(r"`[^`]*`", "", text)
    assert not re.findall(r"<[^>\s]*>", outside_code)  # a path's <run> outside a code span is an HTML tag: invisible
    for heading in ("MaxBoxAccV2 (Table 4 layout)", "MaxBoxAcc at each IoU (Table 5 layout)", "Top-1 localization",
                    "Top-1 classification (Table 7 layout)", "PxAP", "The paper's claim: paired differences in MaxBoxAccV2",
                    "Where the CAMs go (the failure modes as numbers)", "Training", "Cost",
                    "Between the floor, the pretrained features and the few-shot row", "The backbones before WSOL training"):
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
    assert "![CAM gallery, ResNet50](gallery_resnet50.png)" in text and (report / "boxacc_resnet50.png").is_file()
    gallery = cv2.imread(str(report / "gallery_resnet50.png"))
    tiles_height, tiles_width = 2 * 224 + 4, 3 * 224 + 2 * 4  # a row per method, a column per image, 4 px gaps
    top, left = gallery.shape[0] - tiles_height, gallery.shape[1] - tiles_width
    assert top > 0 and left > 0  # margins for the labels
    assert (gallery[:top] < 255).any() and (gallery[top:, :left] < 255).any()  # image ids on top, methods left

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
