"""What every DVC stage entry point (stages/*.py) shares: arguments, params.yaml, logging, errors.

The pipeline's own errors (bad configuration, data, downloads, weights) end the stage with one
line naming the problem and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.paths import Layout
from pipeline.registry import BACKBONES, METHODS

Stage = Callable[[Config, Layout, argparse.Namespace], object]


def run(name: str, stage: Stage, per_run: bool = False, per_backbone: bool = False) -> None:
    """Run ``stage(config, layout, args)`` from the project root; ``per_run`` stages take
    ``--backbone``, ``--method`` and ``--seed``, ``per_backbone`` ones ``--backbone``."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"DVC stage '{name}'.")
    if per_run or per_backbone:
        parser.add_argument("--backbone", required=True, choices=BACKBONES)
    if per_run:
        parser.add_argument("--method", required=True, choices=METHODS)
        parser.add_argument("--seed", required=True, type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    layout = Layout.here()
    try:
        stage(load_config(layout.root / "params.yaml"), layout, args)
    except (PipelineError, FileNotFoundError) as error:
        print(f"stage {name}: error: {error}", file=sys.stderr)
        sys.exit(1)
