"""How ``wsol evaluate-scoremaps`` scales with the number of test maps: wall time, and peak memory.

Time: generated (224, 224) float64 .npy maps (the reference's format), evaluated as a subprocess,
start to JSON written, over the first N images of one generated folder for each ``--images`` N.
Memory: the evaluator process's peak RSS (its own ``ru_maxrss``, from wait4) at each
``--memory-images`` N, on float32 maps (half the disk; the CLI widens float32 to float64 exactly).
Per image the evaluator keeps its hits packed to bits, N * D * ceil(K / 8) bytes (D IoU criteria
counting GT-known's 50, K thresholds), and the split's metadata, GT boxes and coverage flags; both
are listed as expected growth next to the measured one (the state measured with tracemalloc in this
process). A map itself is never kept: a float64 map is 401,408 bytes, its uint8 copy 50,176; the
batches read ahead (a few hundred uint8 maps) are a constant, reached from a few hundred maps on.

Generated files live in a temporary folder (``--tmp``) removed afterwards; the disk it needs is
checked first.

    python benchmarks/eval_scaling.py --images 500 2000 5794 --memory-images 5794 50000 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from eval_speed import metadata_subset, run_timed, write_maps, wsol_command

from pipeline.data.metadata import load_metadata
from pipeline.metrics import BoxEvaluator, cam_thresholds
from pipeline.metrics.box_evaluator import GT_KNOWN_IOU

MAP_BYTES = {np.float64: 224 * 224 * 8 + 128, np.float32: 224 * 224 * 4 + 128}  # one .npy file


def records_bytes(n: int, interval: float, iou_thresholds: tuple[int, ...] = (30, 50, 70)) -> int:
    """N x D x ceil(K / 8): the packed hits of n images, D criteria (with GT-known's 50), K thresholds."""
    return n * len(set(iou_thresholds) | {GT_KNOWN_IOU}) * -(-len(cam_thresholds(interval)) // 8)


def state_bytes(metadata_root: Path, interval: float) -> int:
    """Peak bytes traced (tracemalloc) while building what the evaluator keeps of a split: its metadata,
    a BoxEvaluator (GT boxes, coverage flags, packed records) and the records' image-id array."""
    tracemalloc.start()
    metadata = load_metadata(metadata_root)
    kept = BoxEvaluator(metadata, interval), np.array(metadata.image_ids, np.str_)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del kept
    return peak


def run(metadata_root: Path, scoremap_root: Path, interval: float, tmp: Path) -> tuple[float, int]:
    return run_timed(wsol_command(metadata_root, scoremap_root, interval, tmp / "out.json"), tmp / "wsol.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[500, 2000, 5794], help="timed split sizes")
    parser.add_argument("--memory-images", type=int, nargs="+", default=[5794, 50000],
                        help="split sizes whose peak RSS is measured (float32 maps)")
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--maps", choices=("cam", "noisy", "blur"), default="noisy", help="kind of generated score map")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where to generate the maps")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON")
    args = parser.parse_args()

    need = max(max(args.images) * MAP_BYTES[np.float64], max(args.memory_images) * MAP_BYTES[np.float32])
    free = shutil.disk_usage(args.tmp).free
    print(f"{args.tmp}: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed at most (one folder at a time)")
    if need * 1.1 > free:
        sys.exit(f"not enough disk in {args.tmp}: pass smaller --images/--memory-images or another --tmp")

    timing, memory = [], []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        for dtype, sizes, rows in ((np.float64, args.images, timing), (np.float32, args.memory_images, memory)):
            metadata_root, scoremap_root = tmp / "metadata", tmp / "scoremaps"
            start = time.perf_counter()
            write_maps(metadata_root, scoremap_root, max(sizes), args.seed, args.maps, dtype)
            print(f"{max(sizes)} {args.maps} {np.dtype(dtype).name} maps written in {time.perf_counter() - start:.0f} s")
            warm_up = metadata_subset(metadata_root, 2, tmp / "meta-2")
            elapsed, _ = run(warm_up, scoremap_root, args.interval, tmp)
            print(f"warm-up run on 2 maps (imports, numba cache load or fill): {elapsed:.2f} s")
            for n in sizes:
                split = metadata_subset(metadata_root, n, tmp / f"meta-{n}")
                elapsed, peak = run(split, scoremap_root, args.interval, tmp)
                assert json.loads((tmp / "out.json").read_text())["images"] == n
                rows.append({"images": n, "dtype": np.dtype(dtype).name, "seconds": round(elapsed, 2),
                             "ms_per_image": round(elapsed / n * 1e3, 3), "peak_rss_bytes": peak,
                             "records_bytes": records_bytes(n, args.interval),
                             "state_bytes": state_bytes(split, args.interval)})
            shutil.rmtree(scoremap_root)
            shutil.rmtree(metadata_root)

    print(f"\n{'images':>8}{'dtype':>9}{'wall s':>9}{'ms/map':>9}{'peak RSS MB':>13}")
    for row in timing + memory:
        print(f"{row['images']:>8}{row['dtype']:>9}{row['seconds']:>9.2f}{row['ms_per_image']:>9.3f}"
              f"{row['peak_rss_bytes'] / 2**20:>13.1f}")
    if len(memory) >= 2:
        small, large = memory[0], memory[-1]
        added = large["images"] - small["images"]
        grown = large["peak_rss_bytes"] - small["peak_rss_bytes"]
        state = large["state_bytes"] - small["state_bytes"]
        records = large["records_bytes"] - small["records_bytes"]
        print(f"\npeak RSS {small['images']} -> {large['images']} maps (+{added}): +{grown / 2**20:.1f} MB measured "
              f"({grown / added:.0f} B/image)\n"
              f"  expected: per-image state +{state / 2**20:.1f} MB ({state / added:.0f} B/image: metadata, GT boxes, "
              f"coverage, record ids; tracemalloc peak), of which the packed hit records N x D x ceil(K/8) = "
              f"{records} B ({records / added:.0f} B/image)\n"
              f"  keeping the maps instead: +{added * 224 * 224 / 2**20:.0f} MB as uint8, "
              f"+{added * 224 * 224 * 8 / 2**20:.0f} MB as float64")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {"interval": args.interval, "maps": args.maps, "seed": args.seed}
        args.json.write_text(json.dumps({"settings": settings, "timing": timing, "memory": memory}, indent=2) + "\n")


if __name__ == "__main__":
    main()
