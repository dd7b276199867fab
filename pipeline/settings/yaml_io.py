"""The one way this project reads and writes YAML: YAML 1.2, as DVC reads params.yaml.

DVC parses params.yaml with ruamel.yaml (``dvc/utils/serialize/_yaml.py``), which follows YAML 1.2:
``1e-3`` is a float and ``on``/``yes`` are strings. PyYAML follows YAML 1.1, where ``1e-3`` is a
string and ``on`` is ``True``; a file read both ways means one thing to DVC and another to a stage.
A key written twice is an error here (ruamel refuses it), never "the last one wins".

Anchors and aliases are allowed (params.yaml's ``<<: *icl``), but a document whose aliases expand
it past :data:`MAX_NODES` nodes is refused before it is built: a "billion laughs" of 1 KB (aliases of
aliases) would otherwise be expanded by every reader that walks it (a flow-style dump, a flatten).
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.errors import PipelineError

MAX_NODES = 100_000  # nodes once every alias is expanded; params.yaml has about 2,000 (50x headroom)


class YamlError(PipelineError, ValueError):
    """A file that is not valid YAML 1.2; the message names the file, line and column."""


def expanded_size(root: Node | None) -> int:
    """How many nodes the document rooted at ``root`` has once every alias is expanded, counted
    without expanding (an alias is the same node object reached again), in time linear in the file."""
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    return 0 if root is None else size(root)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, SequenceNode) else []


def parse(text: str, source: str) -> object:
    """The data in ``text`` (plain dicts, lists and scalars); ``source`` names it in errors."""
    try:
        size = expanded_size(YAML(typ="safe", pure=True).compose(text))
        if size > MAX_NODES:
            raise YamlError(f"{source}: its aliases (*name) expand it to {size:,} YAML nodes, more than the "
                            f"{MAX_NODES:,} any params file needs (an alias bomb?); refused before it is read")
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = error.problem or error.context or str(error)  # a key twice: 'found duplicate key "lr" ...'
        raise YamlError(f"{source}{where}: not valid YAML: {problem}") from None
    except YAMLError as error:
        raise YamlError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:  # ruamel composes nested collections recursively
        raise YamlError(f"{source}: nested deeper than any params file needs (Python's recursion limit)") from None


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
    yaml.default_flow_style = False  # type: ignore[assignment]
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    text = io.StringIO()
    yaml.dump(data, text)
    return text.getvalue()
