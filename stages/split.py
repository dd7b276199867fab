"""DVC stage `split`: data/splits/<dataset> (train-weaksup, train-fullsup, test), every file checked."""

from pipeline.data import prepare
from pipeline.stage_runner import run

if __name__ == "__main__":
    run("split", lambda config, layout, args: prepare.split(config, layout))
