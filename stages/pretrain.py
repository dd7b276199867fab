"""DVC stage `pretrain@<backbone>`: the synthetic stand-in for ImageNet weights; writes pretrained/<backbone>/."""

from pipeline.dag.stage_runner import run
from pipeline.train.pretrain import pretrain

if __name__ == "__main__":
    run("pretrain", lambda config, layout, args: pretrain(config, layout, args.backbone), ("backbone",))
