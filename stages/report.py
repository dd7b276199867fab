"""DVC stage `report`: report/<dataset>/report.md with the paper's tables and CAM galleries, the
headline on the MLflow experiment's page; prints the headline table and where the results are."""

from pipeline.dag.stage_runner import run
from pipeline.report.experiment_page import publish, where
from pipeline.report.report import build_report, terminal_summary


def report(config, layout, args):
    path, made = build_report(config, layout)
    experiment = publish(config, layout, path)
    print(terminal_summary(made, path, layout, where(experiment)))


if __name__ == "__main__":
    run("report", report)
