"""The one way this project reads and writes YAML: YAML 1.2, as DVC reads params.yaml.

DVC parses params.yaml with ruamel.yaml (``dvc/utils/serialize/_yaml.py``), which follows YAML 1.2:
``1e-3`` is a float and ``on``/``yes`` are strings. PyYAML follows YAML 1.1, where ``1e-3`` is a
string and ``on`` is ``True``; a file read both ways means one thing to DVC and another to a stage.
A key written twice is an error here (ruamel refuses it), never "the last one wins".
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from pipeline.errors import PipelineError


class YamlError(PipelineError, ValueError):
    """A file that is not valid YAML 1.2; the message names the file, line and column."""


def parse(text: str, source: str) -> object:
    """The data in ``text`` (plain dicts, lists and scalars); ``source`` names it in errors."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = error.problem or error.context or str(error)  # a key twice: 'found duplicate key "lr" ...'
        raise YamlError(f"{source}{where}: not valid YAML: {problem}") from None
    except YAMLError as error:
        raise YamlError(f"{source}: not valid YAML: {error}") from None


def read(path: Path) -> object:
    """The data in the YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise YamlError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    return parse(text, str(path))


def dump(data: object) -> str:
    """``data`` as block-style YAML 1.2, keys in their given order."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    text = io.StringIO()
    yaml.dump(data, text)
    return text.getvalue()
