"""DVC stage `download`: data/raw/<dataset> (generated, downloaded and verified, or a local copy recorded)."""

from pipeline.dag.stage_runner import run
from pipeline.data import acquire

if __name__ == "__main__":
    run("download", lambda config, layout, args: acquire.download(config, layout))
