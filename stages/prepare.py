"""DVC stage `prepare`: data/prepared/<dataset>, train and val resized once into uint8 arrays."""

from pipeline.dag.stage_runner import run
from pipeline.data.dataset_folder import DatasetInfo
from pipeline.data.prepared import prepare_splits

if __name__ == "__main__":
    run("prepare", lambda config, layout, args: prepare_splits(
        DatasetInfo.load(layout.split(config.dataset)), config.data, layout.prepared(config.dataset)))
