"""What every DVC stage entry point (stages/*.py) shares: arguments, params.yaml, logging, errors.

The pipeline's own errors (bad configuration, data, downloads, weights) end the stage with one
line naming the problem and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable

from pipeline.dag.paths import Layout
from pipeline.errors import PipelineError
from pipeline.settings.config import Config, load_config
from pipeline.settings.registry import BACKBONES, METHODS

Stage = Callable[[Config, Layout, argparse.Namespace], object]


PER_RUN = ("backbone", "method", "seed")


def run(name: str, stage: Stage, keys: tuple[str, ...] = ()) -> None:
    """Run ``stage(config, layout, args)`` from the project root. A matrix stage takes its ``keys``
    (a prefix of :data:`PER_RUN`: ``--backbone``, ``--method``, ``--seed``) from the command line,
    else from the name DVC gives the stage (``$DVC_STAGE``, see :func:`matrix_item`)."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"DVC stage '{name}'.")
    if "backbone" in keys:
        parser.add_argument("--backbone", choices=BACKBONES)
    if "method" in keys:
        parser.add_argument("--method", choices=METHODS)
    if "seed" in keys:
        parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    given = [key for key in keys if getattr(args, key) is not None]
    if keys and not given:
        try:
            vars(args).update(matrix_item(os.environ.get("DVC_STAGE", ""), name, keys))
        except ValueError as error:
            parser.error(str(error))
    elif given != list(keys):
        parser.error(f"give all of {', '.join('--' + key for key in keys)} (or none, under dvc repro)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    layout = Layout.here()
    try:
        stage(load_config(layout.root / "params.yaml"), layout, args)
    except (PipelineError, FileNotFoundError) as error:
        print(f"stage {name}: error: {error}", file=sys.stderr)
        sys.exit(1)


def matrix_item(addressing: str, name: str, keys: tuple[str, ...]) -> dict[str, str | int]:
    """The backbone (method, seed) of a matrix stage, from the name DVC runs it under: DVC joins the
    matrix values with ``-`` (``train@resnet18-icl-0``) and sets ``$DVC_STAGE`` to it.

    dvc.yaml's commands interpolate no params: DVC would put ``${item.backbone}`` into the shell
    line before any validation, so a params value such as ``resnet50; rm -rf ~`` would run. The
    values arrive here through the environment instead, never parsed by a shell, and must be
    registered names (which contain no ``-``, tests/test_dag.py checks) and an integer seed."""
    stage, _, item = addressing.rpartition(":")[2].partition("@")
    if stage != name or not item:
        raise ValueError(f"$DVC_STAGE is {addressing!r}, not a {name}@<item> stage: pass "
                         f"{' '.join('--' + key for key in keys)}")
    values = dict(zip(keys, item.split("-", len(keys) - 1), strict=False))
    if len(values) != len(keys):
        raise ValueError(f"$DVC_STAGE {addressing!r}: expected {'-'.join(f'<{key}>' for key in keys)} after '@'")
    for key, table in (("backbone", BACKBONES), ("method", METHODS)):
        if key in values and values[key] not in table:
            raise ValueError(f"$DVC_STAGE {addressing!r}: {values[key]!r} is not a registered {key} "
                             f"({', '.join(table)}): check {key}s in params.yaml")
    typed: dict[str, str | int] = dict(values)
    if "seed" in values:
        if not re.fullmatch(r"-?[0-9]+", values["seed"]):
            raise ValueError(f"$DVC_STAGE {addressing!r}: seed {values['seed']!r} is not an integer: check seeds in params.yaml")
        typed["seed"] = int(values["seed"])
    return typed
