"""DVC stage `report`: report/<dataset>/report.md with the paper's tables and CAM galleries; prints
its headline table and where the results are."""

from pipeline.dag.stage_runner import run
from pipeline.report.report import build_report, terminal_summary


def report(config, layout, args):
    print(terminal_summary(build_report(config, layout), layout))


if __name__ == "__main__":
    run("report", report)
