"""The ``wsol`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from importlib.metadata import version
from pathlib import Path

from pipeline.dag.paths import Layout, check_output_folder, check_writable, write_text_atomically
from pipeline.errors import PipelineError
from pipeline.metrics import MAXBOXACC_V2_IOUS, evaluate_scoremap_folder
from pipeline.settings.config import MAX_BATCH, MAX_BOOTSTRAP_SAMPLES, MAX_CAM_CURVE_INTERVAL, MIN_CAM_CURVE_INTERVAL
from pipeline.settings.registry import BACKBONES, METHODS


def _resamples(text: str) -> int:
    """--bootstrap's value: a whole number in [0, MAX_BOOTSTRAP_SAMPLES] (params' bound)."""
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"expected a whole number of resamples >= 0, got {text!r}")
    if int(text) > MAX_BOOTSTRAP_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BOOTSTRAP_SAMPLES} resamples, got {text!r}")
    return int(text)


def _batch_size(text: str) -> int:
    """--batch-size's value: a whole number in [1, MAX_BATCH] (params' bound)."""
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    if int(text) > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BATCH}, got {text!r}")
    return int(text)


def _cam_curve_interval(text: str) -> float:
    """--cam-curve-interval's value: a number in params' range for it (not NaN)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not MIN_CAM_CURVE_INTERVAL <= value <= MAX_CAM_CURVE_INTERVAL:
        raise argparse.ArgumentTypeError(f"expected a number in [{MIN_CAM_CURVE_INTERVAL:g}, "
                                         f"{MAX_CAM_CURVE_INTERVAL:g}], got {text!r}")
    return value


def _threshold(text: str) -> float:
    """A CAM threshold: a number in [0, 1] (not NaN)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _output_file(text: str) -> Path:
    """An --out that names a file to write: not an existing folder."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected the name of a file to write")
    return Path(text)


def _output_folder(text: str) -> Path:
    """An --out that names a folder to write: not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; expected the name of a folder to write")
    return path


def _evaluate_scoremaps(args: argparse.Namespace) -> None:
    for path in (args.out, args.records):
        if path is not None:
            check_writable(path)
    result = evaluate_scoremap_folder(
        metadata_root=args.metadata_root,
        scoremap_root=args.scoremap_root,
        mask_root=args.mask_root,
        cam_curve_interval=args.cam_curve_interval,
        iou_thresholds=args.iou_thresholds,
        predictions=args.predictions,
        single_contour=args.single_contour,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        records=args.records,
    )
    _name_the_mean(result)
    if args.out is not None:
        write_text_atomically(args.out, json.dumps(result, indent=2) + "\n")
    curves = ("boxacc", "thresholds", "pr_curve")
    summary = {k: v for k, v in result.items() if k not in curves}
    if "single_contour" in summary:
        summary["single_contour"] = {k: v for k, v in summary["single_contour"].items() if k not in curves}
    print(json.dumps(summary, indent=2))


def _name_the_mean(result: dict) -> None:
    """MaxBoxAccV2 is the mean over IoU 30, 50 and 70 (Choe et al., CVPR 2020); over other criteria
    the mean is named for them (``maxboxacc_mean_50``, ``maxboxacc_mean_40_60``), in place."""
    thresholds = result.get("iou_thresholds")
    if thresholds is None or tuple(sorted(thresholds)) == MAXBOXACC_V2_IOUS:
        return
    name = "maxboxacc_mean_" + "_".join(str(delta) for delta in thresholds)
    for table in (result, result.get("ci95", {}), result.get("single_contour", {})):
        if "maxboxacc_v2" in table:
            table[name] = table.pop("maxboxacc_v2")


def _tune(args: argparse.Namespace) -> None:
    from pipeline.settings.config import load_config
    from pipeline.train.tune import search, write_fragment  # Ray and PyTorch: imported only when needed

    config = load_config(args.params)
    layout, backbone, method = Layout(args.params.resolve().parent), args.backbone or config.tune.backbone, \
        args.method or config.tune.method
    write_fragment(config, layout, backbone, method, search(config, layout, backbone, method, config.tune.num_samples, "tune"))


def _localize(args: argparse.Namespace) -> int:
    """Exit status 1 when some image could not be read (the others are still localized)."""
    from pipeline.evaluation.localize import localize

    check_writable(args.out)
    found, errors = localize(args.images, args.model, args.out, args.threshold)
    print(json.dumps([f.to_dict() for f in found], indent=2))
    for error in errors:
        print(f"wsol localize: error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _import_checkpoint(args: argparse.Namespace) -> None:
    from pipeline.models.checkpoint_import import import_run
    from pipeline.settings.config import load_config

    config = load_config(args.params)
    out = args.out or Path("imported") / config.dataset / f"{args.backbone}-{args.method}"
    check_output_folder(out, args.force)
    imported = import_run(args.checkpoint, args.backbone, args.method, config, Layout(args.params.resolve().parent),
                          out, force=args.force)
    print(json.dumps({"run_folder": str(out), "num_classes": imported.num_classes, "tensors_loaded": imported.loaded,
                      "unused_keys": list(imported.unused)}, indent=2))


def _export(args: argparse.Namespace) -> None:
    from pipeline.export.export import export
    from pipeline.settings.config import load_config

    out = args.out or args.run_folder.with_name(f"{args.run_folder.name}-export")
    check_output_folder(out, args.force)
    config = load_config(args.params)
    export(args.run_folder, out, config.export.tolerance, force=args.force)
    print(out)


def _evaluate(args: argparse.Namespace) -> None:
    from pipeline.evaluation.evaluate import evaluate_exported
    from pipeline.settings.config import load_config

    out = args.out or args.export_folder.with_name(f"{args.export_folder.name}-results")
    check_output_folder(out, args.force)
    config = load_config(args.params)
    metrics = evaluate_exported(args.export_folder, config, Layout(args.params.resolve().parent), out, force=args.force)
    print(json.dumps(metrics, indent=2))


def _apply_params(args: argparse.Namespace) -> None:
    from pipeline.settings.params_file import apply_fragment

    changed = apply_fragment(args.fragment, args.params)
    print(f"{args.params}: changed {len(changed)} key(s) from {args.fragment}: {', '.join(changed)}" if changed
          else f"{args.params}: already as in {args.fragment}; nothing changed")


_FORCE = ("write into --out even where it holds files wsol did not write there: they are kept, any of the names "
          "wsol writes replaced (without it, such a folder is refused before any work)")


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsol", description="Weakly supervised object localization pipeline.",
                                     formatter_class=_ShowDefaults)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('wsol-pipeline')}")
    subparser = partial(argparse.ArgumentParser, formatter_class=_ShowDefaults)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=subparser)  # type: ignore[call-overload]

    evaluate = commands.add_parser(
        "evaluate-scoremaps",
        help="score saved score maps (MaxBoxAccV2, or PxAP with --mask-root)",
        description="Evaluate <scoremap-root>/<image_id>.npy score maps (224x224, values in [0, 1]) against a "
                    "metadata folder in the clovaai/wsolevaluation format. Prints a summary as JSON; --out "
                    "writes it with every curve.",
    )
    evaluate.add_argument("--metadata-root", type=Path, required=True,
                          help="folder with image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt")
    evaluate.add_argument("--scoremap-root", type=Path, required=True, help="folder of <image_id>.npy score maps")
    evaluate.add_argument("--mask-root", type=Path, help="root of the mask files named in localization.txt (PxAP)")
    evaluate.add_argument("--cam-curve-interval", type=_cam_curve_interval, default=0.01,
                          help="step between thresholds tau")
    evaluate.add_argument("--iou-thresholds", type=int, nargs="+", default=list(MAXBOXACC_V2_IOUS),
                          help="IoU criteria delta, in %%")
    evaluate.add_argument("--predictions", type=Path,
                          help="<image_id>,<predicted label> file: adds top-1 loc and top-1 cls")
    evaluate.add_argument("--single-contour", action="store_true",
                          help="also score the old single-contour MaxBoxAcc (largest contour; slower)")
    evaluate.add_argument("--batch-size", type=_batch_size, default=64, help="score maps per batch")
    evaluate.add_argument("--out", type=_output_file, help="write the full result (with curves) to this JSON file")
    evaluate.add_argument("--bootstrap", type=_resamples, default=0, metavar="N",
                          help="add ci95: 95%% percentile bootstrap intervals of every accuracy from N resamples "
                               "of the images (seed 0; 0: none)")
    evaluate.add_argument("--records", type=_output_file,
                          help="save the per-image records the intervals come from to this .npz file")
    evaluate.set_defaults(run=_evaluate_scoremaps)

    tune = commands.add_parser(
        "tune", help="search hyperparameters on train-fullsup with Ray Tune (tune section of params.yaml)",
        description="Ray Tune's random search (tune.num_samples trials) over the method's optimiser on the backbone "
                    "(tune.lr, tune.weight_decay, tune.lr_decay_epochs) and its own settings "
                    "(method_settings.<method>.search.space), each trial a Ray Train run scored on train-fullsup; "
                    "writes the best values to tuning/<dataset>-<backbone>-<method>.yaml. The DAG's search@ stages "
                    "run the same search for every backbone x method whose method_settings.<method>.search.trials > 0.")
    tune.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file (its folder is the project)")
    tune.add_argument("--backbone", choices=BACKBONES, help="default: tune.backbone")
    tune.add_argument("--method", choices=METHODS, help="default: tune.method")
    tune.set_defaults(run=_tune)

    where = commands.add_parser(
        "localize", help="class, score and box of images with an exported model (prints JSON, writes overlays)",
        description="Run an exported model (exports/<dataset>/<run>/model.pt2) on images: prints a JSON list with the "
                    "predicted class, its probability and the box of its CAM (image pixels); writes heat-map overlays "
                    "with the box. Unreadable images are reported one by one and the exit status is 1.")
    where.add_argument("images", type=Path, nargs="+")
    where.add_argument("--model", type=Path, required=True, help="an exported model.pt2, or its export folder")
    where.add_argument("--out", type=_output_folder, default="localized",
                       help="folder for the <stem>_cam.png overlays (<relative__path>_cam.png where stems collide)")
    where.add_argument("--threshold", type=_threshold, help="CAM threshold (default: the model's val-optimal one)")
    where.set_defaults(run=_localize)

    convert = commands.add_parser(
        "import-checkpoint", help="a checkpoint clovaai/wsolevaluation saved, as a run folder of ours",
        description="Rename the parameters of a checkpoint saved by clovaai/wsolevaluation's main.py (its "
                    "{'state_dict': ...} file, or a bare state dict) into this pipeline's model for --backbone and "
                    "--method, built with params.yaml's settings (large_feature_map must be the one it was trained "
                    "with); find its val-optimal CAM threshold on train-fullsup and write a run folder (model.pt, "
                    "model.json) that `wsol export` and `wsol evaluate` take. Prints the keys of the file no layer "
                    "took.")
    convert.add_argument("checkpoint", type=Path)
    convert.add_argument("--from", dest="source", choices=["wsolevaluation"], required=True,
                         help="the code that saved the checkpoint")
    convert.add_argument("--backbone", choices=BACKBONES, required=True)
    convert.add_argument("--method", choices=[m for m, spec in METHODS.items() if spec.implementation != METHODS["icl"].implementation], required=True)
    convert.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file (its folder is the project)")
    convert.add_argument("--out", type=_output_folder,
                         help="run folder to write (default: imported/<dataset>/<backbone>-<method>)")
    convert.add_argument("--force", action="store_true", help=_FORCE)
    convert.set_defaults(run=_import_checkpoint)

    for name, run, folder, help_text, suffix in (
            ("export", _export, "run_folder", "torch.export (.pt2) and ONNX of a run folder, checked against the eager model",
             "export"),
            ("evaluate", _evaluate, "export_folder", "score an export folder on params' test split (MaxBoxAccV2, "
             "top-1 loc, ...)", "results")):
        stage = commands.add_parser(name, help=help_text, description=f"What the {name} stage does, for any "
                                    f"{folder.replace('_', ' ')} (trained, or from import-checkpoint).")
        stage.add_argument(folder, type=Path)
        stage.add_argument("--params", type=Path, default=Path("params.yaml"), help="the settings to use")
        stage.add_argument("--out", type=_output_folder, help=f"folder to write (default: <{folder}>-{suffix})")
        stage.add_argument("--force", action="store_true", help=_FORCE)
        stage.set_defaults(run=run)

    params = commands.add_parser("params", help="edit params.yaml")
    actions = params.add_subparsers(dest="action", required=True, parser_class=subparser)
    apply = actions.add_parser(
        "apply", help="merge a params.yaml fragment (infra/params/*.yaml, tuning/*.yaml) into params.yaml",
        description="Set the keys a YAML fragment sets in params.yaml, editing only the lines of the values that "
                    "change (every other line, comment and style stays byte-equal); the result is validated and "
                    "written only if valid.")
    apply.add_argument("fragment", type=Path)
    apply.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file to change")
    apply.set_defaults(run=_apply_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
    except (PipelineError, ValueError, FileNotFoundError) as error:  # the pipeline's own errors, bad arguments
        print(f"wsol {args.command}: error: {error}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
