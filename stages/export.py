"""DVC stage `export@<backbone>-<method>`: TorchScript and ONNX of the inference network, checked against eager."""

from pipeline.export import export
from pipeline.stage_runner import run


def export_stage(config, layout, args):
    export(layout.run(config.dataset, args.backbone, args.method, args.seed), layout.export(config.dataset, args.backbone, args.method, args.seed),
           config.export.tolerance)


if __name__ == "__main__":
    run("export", export_stage, per_run=True)
