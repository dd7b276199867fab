"""DVC stage `tune` (tuning/dvc.yaml, outside the default DAG): `wsol tune` for params' tune.backbone and tune.method."""

from pipeline.stage_runner import run
from pipeline.train.tune import search

if __name__ == "__main__":
    run("tune", lambda config, layout, args: search(config, layout, config.tune.backbone, config.tune.method))
