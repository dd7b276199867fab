"""DVC stage `train@<backbone>-<method>-<seed>`: one Ray Train run with the settings its search chose
(searches/<dataset>/<backbone>-<method>.json; none without trials), tracked in MLflow under the search's
run; writes runs/<dataset>/<run>/, then prunes the run's Ray checkpoints."""

from pipeline.dag.stage_runner import PER_RUN, run
from pipeline.formats.search_result import apply_search, read_search
from pipeline.train.driver import fit, prune_checkpoints
from pipeline.train.outputs import write_outputs


def train(config, layout, args):
    path = layout.search(config.dataset, args.backbone, args.method)
    searched = read_search(path, config.dataset, args.backbone, args.method)
    config = apply_search(config, searched, str(path))
    trained = fit(config, layout, args.backbone, args.method, args.seed, parent_run_id=searched.mlflow_run_id)
    write_outputs(trained, config, layout)
    prune_checkpoints(trained)


if __name__ == "__main__":
    run("train", train, PER_RUN)
