"""DVC stage `baseline`: the protocol's center-Gaussian floor on test; writes results/<dataset>/center-gaussian/."""

from pipeline.dag.stage_runner import run
from pipeline.evaluation.evaluate import evaluate_baseline

if __name__ == "__main__":
    run("baseline", lambda config, layout, args: evaluate_baseline(config, layout))
