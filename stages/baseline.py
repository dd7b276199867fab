"""DVC stage `baseline`: the protocol's center-Gaussian floor on test; writes results/<dataset>/center-gaussian/."""

from pipeline.evaluate import evaluate_baseline
from pipeline.stage_runner import run

if __name__ == "__main__":
    run("baseline", lambda config, layout, args: evaluate_baseline(config, layout))
