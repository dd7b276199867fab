"""DVC stage `features@<backbone>`: the pretrained backbone's channel-mean map on test; writes results/<dataset>/features-<backbone>/."""

from pipeline.dag.stage_runner import run
from pipeline.evaluation.reference_rows import evaluate_features

if __name__ == "__main__":
    run("features", lambda config, layout, args: evaluate_features(config, layout, args.backbone), ("backbone",))
