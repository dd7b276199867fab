"""The report: the paper's tables with intervals and the best of each column in bold, the floor,
paired differences, where the CAMs go, and a CAM gallery."""

import json

import cv2

from pipeline.evaluate import evaluate, evaluate_baseline
from pipeline.report import build_report
from tests.conftest import SAVED_METHODS


def test_the_report_has_the_paper_tables_the_floor_and_a_gallery(saved_project):
    layout, cfg, _ = saved_project
    for method in SAVED_METHODS:
        evaluate(cfg, layout, "resnet50", method, 0)
    floor = evaluate_baseline(cfg, layout)
    text = build_report(cfg, layout).read_text()
    for heading in ("MaxBoxAccV2 (Table 4 layout)", "MaxBoxAcc at each IoU (Table 5 layout)", "Top-1 localization",
                    "Top-1 classification (Table 7 layout)", "PxAP", "The paper's claim: paired differences in MaxBoxAccV2",
                    "Where the CAMs go (the failure modes as numbers)"):
        assert f"## {heading}" in text
    metrics = {m: json.loads((layout.results("synth", "resnet50", m, 0) / "metrics.json").read_text())
               for m in SAVED_METHODS}
    values = {m: r["maxboxacc_v2"] for m, r in metrics.items()}
    table = text.split("## MaxBoxAccV2 (Table 4 layout)")[1].split("##")[0]
    best = max(values, key=values.get)
    for method, name in (("cam", "CAM"), ("icl", "Ours (ICL)")):
        shown = f"**{values[method]:.2f}**" if method == best and len(set(values.values())) > 1 else f"{values[method]:.2f}"
        low, high = metrics[method]["ci95"]["maxboxacc_v2"]
        assert f"| {name} | {shown} [{low:.1f}, {high:.1f}] |" in table
    low, high = floor["ci95"]["maxboxacc_v2"]
    assert f"| Center Gaussian (floor) | {floor['maxboxacc_v2']:.2f} [{low:.1f}, {high:.1f}] |" in table
    paired = text.split("## The paper's claim")[1].split("\n## ")[0]
    assert f"| Ours (ICL) | CAM | ResNet50 | {values['icl'] - values['cam']:+.2f} |" in paired
    assert "the paper's claim" in paired  # a verdict in words
    regions = text.split("## Where the CAMs go")[1].split("\n## ")[0]
    assert "| CAM on part |" in regions.replace("CAM on background | CAM on context | CAM on body | ", "")
    gallery = cv2.imread(str(layout.report("synth") / "gallery_resnet50.jpg"))
    assert gallery.shape[0] > 2 * 224 and gallery.shape[1] > 3 * 224  # a row per method, a column per image
