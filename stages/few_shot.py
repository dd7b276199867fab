"""DVC stage `few_shot@<backbone>`: the few-shot fully supervised row; writes results/<dataset>/few-shot-<backbone>/."""

from pipeline.dag.stage_runner import run
from pipeline.train.few_shot import few_shot

if __name__ == "__main__":
    run("few_shot", lambda config, layout, args: few_shot(config, layout, args.backbone), ("backbone",))
