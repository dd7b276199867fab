"""DVC stage `train@<backbone>-<method>-<seed>`: one Ray Train run, tracked in MLflow; writes
runs/<dataset>/<run>/, then prunes the run's Ray checkpoints."""

from pipeline.dag.stage_runner import PER_RUN, run
from pipeline.train.driver import fit, prune_checkpoints
from pipeline.train.outputs import write_outputs


def train(config, layout, args):
    trained = fit(config, layout, args.backbone, args.method, args.seed)
    write_outputs(trained, config, layout)
    prune_checkpoints(trained)


if __name__ == "__main__":
    run("train", train, PER_RUN)
