"""DVC stage `evaluate@<backbone>-<method>`: the exported network on test; writes results/<dataset>/<run>/."""

from pipeline.dag.stage_runner import PER_RUN, run
from pipeline.evaluation.evaluate import evaluate

if __name__ == "__main__":
    run("evaluate", lambda config, layout, args: evaluate(config, layout, args.backbone, args.method, args.seed), PER_RUN)
