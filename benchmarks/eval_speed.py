"""Speed of our box evaluator, and of the reference's (clovaai/wsolevaluation) side by side.

Generates score maps and GT boxes, then times ``accumulate`` over in-memory maps for both
evaluators (file loading excluded for both) and checks that their MaxBoxAcc values are identical.
Map kinds (``--maps``): ``cam``, smooth CAM-like maps (few contours); ``noisy``, the same plus blurred
pixel noise; ``blur``, blurred pixel noise alone (hundreds of contours per threshold: the regime where
the reference needs ~55-70 ms a map at interval 0.01).

    python benchmarks/eval_speed.py --maps noisy --interval 0.01 --reference /path/to/wsolevaluation
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numba
import numpy as np

from pipeline.metadata import load_metadata
from pipeline.metrics import BoxEvaluator


def generated_maps(n: int, seed: int, kind: str = "cam") -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """n (224, 224) float64 maps in [0, 1], one GT box each (original pixels) and original sizes.

    kind "cam": a coarse 7/14/28-px random activation plus an object bump, bicubic-upsampled as CAMs
    are (few contours); "noisy": the same plus pixel noise blurred with sigma 1; "blur": pixel noise
    blurred with sigma 1 alone (the GT box still comes from the bump's position).
    """
    rng = np.random.default_rng(seed)
    maps, boxes, sizes = [], [], []
    for _ in range(n):
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
        maps.append(cam)
        boxes.append([max(0, int(x0)), max(0, int(y0)), min(width - 1, int(x1)), min(height - 1, int(y1))])
        sizes.append((width, height))
    return np.stack(maps), np.array(boxes), sizes


def write_metadata(root: Path, boxes: np.ndarray, sizes: list[tuple[int, int]]) -> list[str]:
    ids = [f"class{i % 10}/image{i:06d}.jpg" for i in range(len(boxes))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "class_labels.txt").write_text("".join(f"{i},{k % 10}\n" for k, i in enumerate(ids)))
    (root / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (w, h) in zip(ids, sizes)))
    (root / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, b in zip(ids, boxes)))
    return ids


def time_ours(metadata, maps, ids, interval, single_contour, batch=64) -> tuple[float, list[float]]:
    evaluator = BoxEvaluator(metadata, interval, (30, 50, 70), single_contour=single_contour)
    start = time.perf_counter()
    for i in range(0, len(maps), batch):
        evaluator.accumulate(maps[i:i + batch], ids[i:i + batch])
    elapsed = time.perf_counter() - start
    result = evaluator.compute()
    scores = result.single_contour if single_contour else result.multi_contour
    return elapsed, [scores.maxboxacc[d] for d in (30, 50, 70)]


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


def time_reference(evaluation, metadata_root, maps, ids, interval, single_contour) -> tuple[float, list[float]]:
    evaluator = evaluation.BoxEvaluator(
        metadata=evaluation.configure_metadata(str(metadata_root)), dataset_name="CUB", split="test",
        cam_threshold_list=list(np.arange(0, 1, interval)), iou_threshold_list=[30, 50, 70], mask_root=None,
        multi_contour_eval=not single_contour)
    start = time.perf_counter()
    for scoremap, image_id in zip(maps, ids):
        evaluator.accumulate(scoremap, image_id)
    elapsed = time.perf_counter() - start
    return elapsed, [float(v) for v in evaluator.compute()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps", choices=("cam", "noisy", "blur"), default="cam", help="kind of generated score map")
    parser.add_argument("--single-contour", action="store_true", help="time the old single-contour mode")
    parser.add_argument("--reference", type=Path, help="a checkout of clovaai/wsolevaluation to run side by side")
    parser.add_argument("--json", type=Path, help="also write the table as JSON (e.g. for dvc metrics)")
    args = parser.parse_args()

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
            evaluation = import_reference(args.reference)
            elapsed, reference = time_reference(evaluation, root, maps, ids, args.interval, args.single_contour)
            rows.append(("reference", elapsed, reference))

    slowest = max(elapsed for _, elapsed, _ in rows)
    print(f"{'evaluator':<22}{'images/s':>10}{'ms/image':>10}{'speed-up':>10}   MaxBoxAcc@30/50/70")
    for name, elapsed, scores in rows:
        print(f"{name:<22}{args.images / elapsed:>10.1f}{elapsed / args.images * 1e3:>10.3f}"
              f"{slowest / elapsed:>9.1f}x   {' '.join(f'{s:.6f}' for s in scores)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        table = {name: {"images_per_s": round(args.images / elapsed, 1), "maxboxacc": scores}
                 for name, elapsed, scores in rows}
        settings = {"images": args.images, "interval": args.interval, "maps": args.maps,
                    "single_contour": args.single_contour}
        args.json.write_text(json.dumps({"settings": settings, "evaluators": table}, indent=2) + "\n")
    if args.reference is not None:
        diff = max(abs(a - b) for a, b in zip(rows[0][2], rows[-1][2]))
        print(f"max |ours - reference| = {diff:.3g}  ({'identical' if diff <= 1e-9 else 'DIFFERENT'})")
        if diff > 1e-9:
            sys.exit(1)


if __name__ == "__main__":
    main()
