"""Dataset sources by name. Each module has ``fetch(settings, layout)``, the download stage (fills
``data/raw/<name>``), and ``tables(settings, layout)``, what the split stage writes."""

from __future__ import annotations

from types import ModuleType

from pipeline.data.sources import cub, custom, ilsvrc, openimages, synth

SOURCES: dict[str, ModuleType] = {"synth": synth, "cub": cub, "ilsvrc": ilsvrc, "openimages": openimages,
                                  "custom": custom}
