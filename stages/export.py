"""DVC stage `export@<backbone>-<method>-<seed>`: the inference network as torch.export (.pt2) and ONNX,
checked against eager, then logged to its MLflow run as a registered MLflow model."""

from pipeline.dag.stage_runner import PER_RUN, run
from pipeline.export.export import export
from pipeline.export.served_model import log_served_model
from pipeline.formats.export_folder import load_exported


def export_stage(config, layout, args):
    out = layout.export(config.dataset, args.backbone, args.method, args.seed)
    export(layout.run(config.dataset, args.backbone, args.method, args.seed), out, config.export.tolerance,
           force=True)  # the stage's own folder
    log_served_model(out, load_exported(out)[1], args.seed, layout)


if __name__ == "__main__":
    run("export", export_stage, PER_RUN)
