"""How a ``dvc repro`` of the project splits its time between stages.

Runs ``dvc repro`` (extra arguments passed on, e.g. ``--force`` to run every stage) in the project
root, timestamps each line DVC prints, and reports each stage's wall time (from its "Running stage"
line to the next stage's, or to the end), summed per kind (train@..., evaluate@...) with its share.

    python benchmarks/dag_stages.py --force
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"^Running stage '([^']+)'")


def timed_repro(arguments: list[str]) -> tuple[list[tuple[str, float]], float]:
    """[(stage, seconds)] in the order DVC ran them, and the whole run's seconds; DVC's output passes through."""
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    process = subprocess.Popen(["dvc", "repro", *arguments], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    for line in process.stdout:
        sys.stderr.write(line)
        match = RUNNING.match(line)
        if match:
            marks.append((match.group(1), time.perf_counter()))
    if process.wait() != 0:
        raise SystemExit(f"dvc repro failed with status {process.returncode}")
    ended = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [ended]
    return [(name, end - start) for (name, start), end in zip(marks, ends, strict=False)], ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    args, passed = parser.parse_known_args()
    stages, total = timed_repro(passed)
    kinds: dict[str, list[float]] = defaultdict(list)
    for name, seconds in stages:
        kinds[name.partition("@")[0]].append(seconds)
    if args.json:
        print(json.dumps({"total_s": total, "stages": dict(stages)}, indent=2))
        return
    print(f"{'stage':10s} {'runs':>4s} {'seconds':>8s} {'share':>6s}")
    for kind, times in kinds.items():
        print(f"{kind:10s} {len(times):4d} {sum(times):8.1f} {sum(times) / total:6.1%}")
    print(f"{'total':10s} {len(stages):4d} {total:8.1f}")


if __name__ == "__main__":
    main()
