"""Speed of our box evaluator, and of the reference's (clovaai/wsolevaluation) side by side.

In-memory mode (default): generates score maps and GT boxes, then times ``accumulate`` over
in-memory maps for both evaluators (file loading excluded for both) and checks that their
MaxBoxAcc values are identical. Whole-process mode (``--whole-process``): writes the maps as
``<image_id>.npy`` files plus a metadata folder to a temporary folder, then times, from process
start to result written, ``wsol evaluate-scoremaps`` and the reference's evaluator (its
``BoxEvaluator`` fed by its own score-map loader, as its ``evaluation.py`` main does), each as a
subprocess. Map kinds (``--maps``): ``cam``, smooth CAM-like maps (few contours); ``noisy``, the
same plus blurred pixel noise; ``blur``, blurred pixel noise alone (hundreds of contours per
threshold: the regime where the reference needs ~55-70 ms a map at interval 0.01).

    python benchmarks/eval_speed.py --maps noisy --interval 0.01 --reference /path/to/wsolevaluation
    python benchmarks/eval_speed.py --whole-process --images 5794 --maps noisy --reference /path/to/wsolevaluation

``--reference`` takes a checkout or a bare git folder of clovaai/wsolevaluation. This module is also
imported by the reference's subprocess (:func:`reference_folder`), so our evaluator is imported
only inside the functions that time it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np

REFERENCE_MODULES = ("evaluation.py", "data_loaders.py", "config.py", "util.py")  # what evaluation.py imports
WSOL = shutil.which("wsol", path=str(Path(sys.executable).parent)) or "wsol"


def generated_map(rng: np.random.Generator, kind: str = "cam") -> tuple[np.ndarray, list[int], tuple[int, int]]:
    """One (224, 224) float64 map in [0, 1], its GT box (x0, y0, x1, y1, original pixels) and the
    original (width, height).

    kind "cam": a coarse 7/14/28-px random activation plus an object bump, bicubic-upsampled as CAMs
    are (few contours); "noisy": the same plus pixel noise blurred with sigma 1; "blur": pixel noise
    blurred with sigma 1 alone (the GT box still comes from the bump's position).
    """
    grid = int(rng.choice([7, 14, 28]))
    coarse = rng.random((grid, grid)) ** 3
    cy, cx = rng.uniform(0.2, 0.8, 2) * grid
    sy, sx = rng.uniform(0.08, 0.3, 2) * grid
    yy, xx = np.mgrid[:grid, :grid]
    coarse += 2 * np.exp(-((yy - cy) / sy) ** 2 - ((xx - cx) / sx) ** 2)
    cam = cv2.resize(coarse, (224, 224), interpolation=cv2.INTER_CUBIC)
    if kind == "noisy":
        cam = cam / cam.max() + cv2.GaussianBlur(rng.random((224, 224)), (0, 0), 1)
    elif kind == "blur":
        cam = cv2.GaussianBlur(rng.random((224, 224)), (0, 0), 1)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    width, height = (int(v) for v in rng.integers(200, 600, 2))
    x0, x1 = sorted((cx + np.array([-2, 2]) * sx) / grid * width)
    y0, y1 = sorted((cy + np.array([-2, 2]) * sy) / grid * height)
    box = [max(0, int(x0)), max(0, int(y0)), min(width - 1, int(x1)), min(height - 1, int(y1))]
    return cam, box, (width, height)


def generated_maps(n: int, seed: int, kind: str = "cam") -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """n maps of :func:`generated_map`: (n, 224, 224) float64, (n, 4) GT boxes, n original sizes."""
    rng = np.random.default_rng(seed)
    maps, boxes, sizes = zip(*(generated_map(rng, kind) for _ in range(n)), strict=False)
    return np.stack(maps), np.array(boxes), list(sizes)


def image_ids(n: int) -> list[str]:
    return [f"class{i % 10}/image{i:06d}.jpg" for i in range(n)]


def write_metadata(root: Path, boxes: np.ndarray, sizes: list[tuple[int, int]]) -> list[str]:
    """A metadata folder (image_ids, class_labels, image_sizes, localization .txt) of one GT box per image."""
    ids = image_ids(len(boxes))
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "class_labels.txt").write_text("".join(f"{i},{k % 10}\n" for k, i in enumerate(ids)))
    (root / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (w, h) in zip(ids, sizes, strict=False)))
    (root / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, b in zip(ids, boxes, strict=False)))
    return ids


def write_maps(metadata_root: Path, scoremap_root: Path, n: int, seed: int, kind: str,
               dtype: type = np.float64) -> None:
    """n generated maps as ``<scoremap_root>/<image_id>.npy`` (224, 224) arrays of ``dtype``, one at a
    time (memory stays one map), and their metadata folder; flushed to disk (os.sync), so that no
    writeback of them runs during the timed runs."""
    rng = np.random.default_rng(seed)
    boxes, sizes = [], []
    for image_id in image_ids(n):
        cam, box, size = generated_map(rng, kind)
        path = scoremap_root / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, cam.astype(dtype, copy=False))
        boxes.append(box)
        sizes.append(size)
    write_metadata(metadata_root, np.array(boxes), sizes)
    os.sync()


def metadata_subset(metadata_root: Path, n: int, out: Path) -> Path:
    """A metadata folder of the first n images of a :func:`write_metadata` one (one line per image in
    each file)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        lines = (metadata_root / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(lines[:n]))
    return out


def run_timed(command: list[str], log: Path) -> tuple[float, int]:
    """Run one subprocess, stdout and stderr to ``log``; its wall seconds and peak RSS in bytes (its own
    ``ru_maxrss`` from wait4). Raises with the log's tail if it fails."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} ... exited with {process.returncode}:\n"
                           f"{log.read_text()[-3000:]}")
    return elapsed, usage.ru_maxrss * 1024


def wsol_command(metadata_root: Path, scoremap_root: Path, interval: float, out: Path) -> list[str]:
    return [WSOL, "evaluate-scoremaps", "--metadata-root", str(metadata_root), "--scoremap-root",
            str(scoremap_root), "--cam-curve-interval", str(interval), "--out", str(out)]


def reference_checkout(path: Path, scratch: Path) -> Path:
    """A folder holding the reference's evaluation.py and what it imports: ``path`` itself when it is a
    checkout, else (a bare git folder) those files of its HEAD, written under ``scratch``."""
    if (path / "evaluation.py").is_file():
        return path
    scratch.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_MODULES:
        (scratch / name).write_bytes(subprocess.run(["git", "--git-dir", str(path), "show", f"HEAD:{name}"],
                                                    check=True, capture_output=True).stdout)
    return scratch


def import_reference(checkout: Path) -> types.ModuleType:
    """The reference's evaluation module, with shims for what its 2020 code needs: ``np.float``
    (removed in NumPy 1.24) and, if not installed, ``munch`` (used only for attribute access)."""
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
    try:
        import munch  # noqa: F401
    except ImportError:
        class Munch(dict):
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__
        sys.modules["munch"] = types.SimpleNamespace(Munch=Munch)  # type: ignore[assignment]
    sys.path.insert(0, str(checkout))
    import evaluation  # the reference's module
    return evaluation


def reference_folder(checkout: str, metadata_root: str, scoremap_root: str, interval: float, out: str) -> None:
    """The reference's multi-contour MaxBoxAcc@30/50/70 of a score-map folder, as its evaluate_wsol
    computes it (its metadata readers, its 4-worker score-map loader, its BoxEvaluator), written to
    ``out`` as a JSON list. Run in its own process by :func:`reference_command`."""
    evaluation = import_reference(Path(checkout))
    metadata = evaluation.configure_metadata(metadata_root)
    evaluator = evaluation.BoxEvaluator(
        metadata=metadata, dataset_name="CUB", split="test", cam_threshold_list=list(np.arange(0, 1, interval)),
        iou_threshold_list=[30, 50, 70], mask_root=None, multi_contour_eval=True)
    for cams, ids in evaluation._get_cam_loader(evaluation.get_image_ids(metadata), scoremap_root):
        for cam, image_id in zip(cams, ids, strict=False):
            evaluator.accumulate(evaluation.t2n(cam), image_id)
    Path(out).write_text(json.dumps([float(v) for v in evaluator.compute()]))


def reference_command(checkout: Path, metadata_root: Path, scoremap_root: Path, interval: float,
                      out: Path) -> list[str]:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import eval_speed; "
            "eval_speed.reference_folder(*sys.argv[1:4], float(sys.argv[4]), sys.argv[5])")
    return [sys.executable, "-c", code, str(checkout), str(metadata_root), str(scoremap_root), str(interval), str(out)]


def time_ours(metadata, maps, ids, interval, single_contour, batch=64) -> tuple[float, list[float]]:
    from pipeline.metrics import BoxEvaluator

    evaluator = BoxEvaluator(metadata, interval, (30, 50, 70), single_contour=single_contour)
    start = time.perf_counter()
    for i in range(0, len(maps), batch):
        evaluator.accumulate(maps[i:i + batch], ids[i:i + batch])
    elapsed = time.perf_counter() - start
    result = evaluator.compute()
    scores = result.single_contour if single_contour else result.multi_contour
    return elapsed, [scores.maxboxacc[d] for d in (30, 50, 70)]


def time_reference(evaluation, metadata_root, maps, ids, interval, single_contour) -> tuple[float, list[float]]:
    evaluator = evaluation.BoxEvaluator(
        metadata=evaluation.configure_metadata(str(metadata_root)), dataset_name="CUB", split="test",
        cam_threshold_list=list(np.arange(0, 1, interval)), iou_threshold_list=[30, 50, 70], mask_root=None,
        multi_contour_eval=not single_contour)
    start = time.perf_counter()
    for scoremap, image_id in zip(maps, ids, strict=False):
        evaluator.accumulate(scoremap, image_id)
    elapsed = time.perf_counter() - start
    return elapsed, [float(v) for v in evaluator.compute()]


def in_memory(args: argparse.Namespace) -> list[tuple[str, float, list[float]]]:
    """Rows (evaluator, seconds, MaxBoxAcc@30/50/70) of ``accumulate`` over in-memory maps."""
    import numba

    from pipeline.data.metadata import load_metadata
    from pipeline.metrics import BoxEvaluator

    maps, boxes, sizes = generated_maps(args.images, args.seed, args.maps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "metadata"
        ids = write_metadata(root, boxes, sizes)
        metadata = load_metadata(root)
        mode = "single-contour" if args.single_contour else "multi-contour"
        print(f"{args.images} {args.maps} 224x224 maps, interval {args.interval}, {mode}, "
              f"{numba.config.NUMBA_NUM_THREADS} cores available")

        start = time.perf_counter()
        BoxEvaluator(metadata, args.interval, single_contour=args.single_contour).accumulate(maps[:2], ids[:2])
        print(f"first call (numba compile or cache load): {time.perf_counter() - start:.2f} s")

        rows = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            elapsed, ours = time_ours(metadata, maps, ids, args.interval, args.single_contour)
            rows.append((f"ours, {threads} thread(s)", elapsed, ours))
        if args.reference is not None:
            evaluation = import_reference(reference_checkout(args.reference, Path(tmp) / "reference"))
            elapsed, reference = time_reference(evaluation, root, maps, ids, args.interval, args.single_contour)
            rows.append(("reference", elapsed, reference))
    return rows


def whole_process(args: argparse.Namespace) -> list[tuple[str, float, list[float]]]:
    """Rows (evaluator, seconds, MaxBoxAcc@30/50/70) of each evaluator's whole process over .npy files."""
    if args.single_contour:
        raise SystemExit("--whole-process times multi-contour MaxBoxAcc only")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        metadata_root, scoremap_root = tmp / "metadata", tmp / "scoremaps"
        start = time.perf_counter()
        write_maps(metadata_root, scoremap_root, args.images, args.seed, args.maps)
        print(f"{args.images} {args.maps} 224x224 float64 .npy maps written in {time.perf_counter() - start:.1f} s, "
              f"interval {args.interval}, multi-contour, {os.cpu_count()} cores")
        elapsed, _ = run_timed(wsol_command(metadata_subset(metadata_root, 2, tmp / "metadata-2"), scoremap_root,
                                            args.interval, tmp / "warm-up.json"), tmp / "warm-up.log")
        print(f"warm-up: wsol evaluate-scoremaps on 2 maps (numba cache load, or fill if stale) {elapsed:.2f} s")
        elapsed, _ = run_timed(wsol_command(metadata_root, scoremap_root, args.interval, tmp / "ours.json"),
                               tmp / "ours.log")
        ours = json.loads((tmp / "ours.json").read_text())["maxboxacc"]
        rows = [("wsol evaluate-scoremaps", elapsed, [ours[str(d)] for d in (30, 50, 70)])]
        if args.reference is not None:
            checkout = reference_checkout(args.reference, tmp / "reference")
            elapsed, _ = run_timed(reference_command(checkout, metadata_root, scoremap_root, args.interval,
                                                     tmp / "reference.json"), tmp / "reference.log")
            rows.append(("reference evaluation.py", elapsed, json.loads((tmp / "reference.json").read_text())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps", choices=("cam", "noisy", "blur"), default="cam", help="kind of generated score map")
    parser.add_argument("--single-contour", action="store_true", help="time the old single-contour mode")
    parser.add_argument("--whole-process", action="store_true",
                        help="time each evaluator as a process over .npy files, start to result written")
    parser.add_argument("--reference", type=Path,
                        help="a checkout (or bare git folder) of clovaai/wsolevaluation to run side by side")
    parser.add_argument("--json", type=Path, help="also write the table as JSON (e.g. for dvc metrics)")
    args = parser.parse_args()

    rows = whole_process(args) if args.whole_process else in_memory(args)
    slowest = max(elapsed for _, elapsed, _ in rows)
    print(f"{'evaluator':<25}{'seconds':>9}{'images/s':>10}{'ms/image':>10}{'speed-up':>10}   MaxBoxAcc@30/50/70")
    for name, elapsed, scores in rows:
        print(f"{name:<25}{elapsed:>9.2f}{args.images / elapsed:>10.1f}{elapsed / args.images * 1e3:>10.3f}"
              f"{slowest / elapsed:>9.1f}x   {' '.join(f'{s:.6f}' for s in scores)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        table = {name: {"seconds": round(elapsed, 3), "images_per_s": round(args.images / elapsed, 1),
                        "maxboxacc": scores} for name, elapsed, scores in rows}
        settings = {"images": args.images, "interval": args.interval, "maps": args.maps,
                    "single_contour": args.single_contour, "whole_process": args.whole_process}
        args.json.write_text(json.dumps({"settings": settings, "evaluators": table}, indent=2) + "\n")
    if args.reference is not None:
        diff = max(abs(a - b) for a, b in zip(rows[0][2], rows[-1][2], strict=False))
        print(f"max |ours - reference| = {diff:.3g}  ({'identical' if diff <= 1e-9 else 'DIFFERENT'})")
        if diff > 1e-9:
            sys.exit(1)


if __name__ == "__main__":
    main()
