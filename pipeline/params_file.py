"""Applying a params.yaml fragment (the paper's setting, a tuned result) to params.yaml.

The fragment is deep-merged into params.yaml with its comments and key order kept, the result is
validated, and only a valid file replaces the old one (written to a temporary name, then renamed).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.config import ConfigError, validate


def _merge(base, fragment) -> None:
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def apply_fragment(fragment_path: Path, params_path: Path) -> list[str]:
    """Merge the fragment into params_path; returns the dotted keys it set."""
    yaml = YAML()
    yaml.preserve_quotes = True
    try:
        fragment = yaml.load(fragment_path.read_text())
        params = yaml.load(params_path.read_text())
    except (OSError, YAMLError) as error:
        raise ConfigError(f"cannot read {fragment_path} or {params_path}: {error}") from None
    if not isinstance(fragment, dict):
        raise ConfigError(f"{fragment_path}: expected a mapping of params.yaml keys")
    _merge(params, fragment)
    text = io.StringIO()
    yaml.dump(params, text)
    validate(YAML(typ="safe").load(text.getvalue()), f"{params_path} with {fragment_path} applied")
    staging = params_path.with_name(f".{params_path.name}.new")
    staging.write_text(text.getvalue())
    os.replace(staging, params_path)

    def keys(node, prefix=""):
        for key, value in node.items():
            yield from keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    return list(keys(fragment))
