"""The report: the paper's tables with the best of each column in bold, and a CAM gallery."""

import json

import cv2

from pipeline.evaluate import evaluate
from pipeline.report import build_report
from tests.conftest import SAVED_METHODS


def test_the_report_has_the_paper_tables_and_a_gallery(saved_project):
    layout, cfg, _ = saved_project
    for method in SAVED_METHODS:
        evaluate(cfg, layout, "resnet50", method)
    text = build_report(cfg, layout).read_text()
    for heading in ("MaxBoxAccV2 (Table 4 layout)", "MaxBoxAcc at each IoU (Table 5 layout)", "Top-1 localization",
                    "Top-1 classification (Table 7 layout)", "PxAP"):
        assert f"## {heading}" in text
    values = {m: json.loads((layout.results("synth", "resnet50", m) / "metrics.json").read_text())["maxboxacc_v2"]
              for m in SAVED_METHODS}
    table = text.split("## MaxBoxAccV2 (Table 4 layout)")[1].split("##")[0]
    best = max(values, key=values.get)
    for method, name in (("cam", "CAM"), ("icl", "Ours (ICL)")):
        shown = f"**{values[method]:.2f}**" if method == best and len(set(values.values())) > 1 else f"{values[method]:.2f}"
        assert f"| {name} | {shown} |" in table
    gallery = cv2.imread(str(layout.report("synth") / "gallery_resnet50.jpg"))
    assert gallery.shape[0] > 2 * 224 and gallery.shape[1] > 3 * 224  # a row per method, a column per image
