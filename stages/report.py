"""DVC stage `report`: report/<dataset>/report.md with the paper's tables and CAM galleries."""

from pipeline.report import build_report
from pipeline.stage_runner import run

if __name__ == "__main__":
    run("report", lambda config, layout, args: build_report(config, layout))
