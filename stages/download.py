"""DVC stage `download`: data/raw/<dataset> (generated, downloaded and verified, or a local copy recorded)."""

from pipeline.data import prepare
from pipeline.stage_runner import run

if __name__ == "__main__":
    run("download", lambda config, layout, args: prepare.download(config, layout))
