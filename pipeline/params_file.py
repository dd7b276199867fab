"""Applying a params.yaml fragment (the paper's setting, a tuned result) to params.yaml.

The fragment is deep-merged into params.yaml with its comments and key order kept, the result is
validated, and only a valid file replaces the old one (written to a temporary name, then renamed).
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

from pipeline import yaml_io
from pipeline.config import ConfigError, validate
from pipeline.paths import write_text_atomically


def _merge(base, fragment) -> None:
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def apply_fragment(fragment_path: Path, params_path: Path) -> list[str]:
    """Merge the fragment into params_path; returns the dotted keys it set."""
    for path in (fragment_path, params_path):  # the errors a stage would give (file:line:column), first
        try:
            yaml_io.read(path)
        except yaml_io.YamlError as error:
            raise ConfigError(str(error)) from None
    yaml = YAML()  # round-trip mode, YAML 1.2 like yaml_io: comments and key order survive
    yaml.preserve_quotes = True
    fragment = yaml.load(fragment_path.read_text())
    params = yaml.load(params_path.read_text())
    if not isinstance(fragment, dict):
        raise ConfigError(f"{fragment_path}: expected a mapping of params.yaml keys")
    _merge(params, fragment)
    text = io.StringIO()
    yaml.dump(params, text)
    validate(yaml_io.parse(text.getvalue(), str(params_path)), f"{params_path} with {fragment_path} applied")
    write_text_atomically(params_path, text.getvalue())

    def keys(node, prefix=""):
        for key, value in node.items():
            yield from keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    return list(keys(fragment))
