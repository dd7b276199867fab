"""DVC stage `train@<backbone>-<method>`: one Ray Train run, tracked in MLflow; writes runs/<dataset>/<run>/."""

from pipeline.stage_runner import run
from pipeline.train.driver import fit
from pipeline.train.outputs import write_outputs


def train(config, layout, args):
    write_outputs(fit(config, layout, args.backbone, args.method, args.seed), config, layout)


if __name__ == "__main__":
    run("train", train, per_run=True)
