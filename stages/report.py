"""DVC stage `report`: report/<dataset>/report.md with the paper's tables and CAM galleries."""

from pipeline.dag.stage_runner import run
from pipeline.report.report import build_report

if __name__ == "__main__":
    run("report", lambda config, layout, args: build_report(config, layout))
