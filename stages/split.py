"""DVC stage `split`: data/splits/<dataset> (train-weaksup, train-fullsup, test), every file checked."""

from pipeline.dag.stage_runner import run
from pipeline.data import acquire

if __name__ == "__main__":
    run("split", lambda config, layout, args: acquire.split(config, layout))
