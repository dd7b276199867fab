"""Applying a params.yaml fragment (the paper's setting, a tuned result) to params.yaml.

Only the values the fragment changes are rewritten, in place in params.yaml's text: every other
byte (comments, blank lines, flow or block style, ``null``) stays as it was. A fragment mapping
descends into params.yaml's mapping of the same key; anything else (a scalar, a list, a mapping where
params.yaml has none or an empty one) replaces that key's value, rendered on one line in flow style (quoted the way
the old string was, where it was quoted). Every key must already be written in params.yaml's text:
a key only inherited through a merge key (``<<: *icl``) cannot be set by editing a line. The result
is validated, and only a valid file replaces the old one (written to a temporary name, then renamed).

Two applies at once would each read the old text and one update would be lost: each holds an
exclusive ``flock`` on params.yaml from its read to its rename, and refuses to write if the text
changed meanwhile (an editor, a process that takes no lock).
"""

from __future__ import annotations

import copy
import fcntl
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from pipeline.dag.paths import write_text_atomically
from pipeline.settings import yaml_io
from pipeline.settings.config import ConfigError, validate_params

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _same(a, b) -> bool:
    """Equal as YAML data: 1, 1.0 and true are three different values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    return type(a) is type(b) and a == b


def _leaves(base, fragment, prefix=()):
    """(key path, new value) for each value the fragment sets: it descends where both are mappings and
    params.yaml's is not empty (an empty one, e.g. ``optimiser: {}``, has no line to edit: it is replaced)."""
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(base, dict) and isinstance(base.get(key), dict) and base[key]:
            yield from _leaves(base[key], value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _merged(base, fragment):
    result = copy.deepcopy(base)
    for path, value in _leaves(base, fragment):
        node = result
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)
    return result


def _render(value, old: Node) -> str:
    """``value`` on one line, safe to put where ``old`` was (also inside a flow collection)."""
    if isinstance(value, str) and isinstance(old, ScalarNode) and old.style in ('"', "'"):
        if old.style == "'" and "\n" not in value:
            return "'" + value.replace("'", "''") + "'"
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = True
    yaml.width = 10**9
    text = io.StringIO()
    yaml.dump(value if isinstance(value, (dict, list)) else [value], text)
    rendered = text.getvalue().strip()
    if rendered.endswith("..."):
        rendered = rendered[:-3].rstrip()
    return rendered if isinstance(value, (dict, list)) else rendered[1:-1]


def _value_node(root: Node, path: tuple) -> Node:
    """The node holding ``path``'s value as written in the text; a ConfigError names the key if none."""
    node = root
    for depth, key in enumerate(path):
        dotted = ".".join(map(str, path[: depth + 1]))
        if not isinstance(node, MappingNode):
            raise ConfigError(f"{dotted}: params.yaml has no such key (its parent is not a mapping)")
        found = [(k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.tag != _MERGE_TAG
                 and k.value == str(key)]
        if not found:
            if any(k.tag == _MERGE_TAG for k, _ in node.value):
                raise ConfigError(f"{dotted}: not written in params.yaml, only inherited through a merge key "
                                  f"(<<: *anchor); set it in the anchored mapping, or write it in "
                                  f"{'.'.join(map(str, path[:depth])) or 'the section'} first")
            raise ConfigError(f"{dotted}: params.yaml has no such key; it must be there before a fragment sets it")
        key_node, node = found[0]
        if node.start_mark.index < key_node.end_mark.index:  # an alias (*name): its text is elsewhere
            raise ConfigError(f"{dotted}: its value in params.yaml is an alias; set the anchored value instead")
    return node


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on the file now at ``path``, held for the block. Whoever held it before
    may have replaced the file (a new inode): then the new file is locked instead."""
    while True:
        try:
            file = open(path, "rb")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
        with file:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file is closed
            held, now = os.fstat(file.fileno()), os.stat(path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                yield
                return


def apply_fragment(fragment_path: Path, params_path: Path) -> list[str]:
    """Set the fragment's values in params_path; returns the dotted keys whose value changed. The
    file is locked from its read to its replacement (another apply waits)."""
    with _locked(params_path):
        return _apply(fragment_path, params_path)


def _apply(fragment_path: Path, params_path: Path) -> list[str]:
    try:  # each file read once, with the errors a stage would give (file:line:column)
        fragment = yaml_io.read(fragment_path)
        text = params_path.read_text(encoding="utf-8")
        params = yaml_io.parse(text, str(params_path))
    except yaml_io.YamlError as error:
        raise ConfigError(str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{params_path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    if not isinstance(fragment, dict):
        raise ConfigError(f"{fragment_path}: expected a mapping of params.yaml keys")
    where = f"{params_path} with {fragment_path} applied"
    expected = _merged(params, fragment)
    validate_params(expected, params_path, where)  # every wrong or unknown key at once, before any text is touched

    try:
        root = YAML().compose(text)  # YAML 1.2, like yaml_io; nodes carry their start and end in the text
    except YAMLError as error:
        raise ConfigError(f"{params_path}: not valid YAML: {error}") from None
    edits, changed = [], []
    for path, value in _leaves(params, fragment):
        if _has(params, path) and _same(_get(params, path), value):
            continue  # already so: not rewritten, not counted
        try:
            node = _value_node(root, path)
        except ConfigError as error:
            raise ConfigError(f"{params_path}: {error}") from None
        dotted = ".".join(map(str, path))
        if not isinstance(node, ScalarNode) and not getattr(node, "flow_style", False):
            kind = "mapping" if isinstance(node, MappingNode) else "list"
            raise ConfigError(f"{params_path}: {dotted}: a block {kind} cannot be replaced by a line edit; "
                              f"set its keys one by one, or write it in flow style in params.yaml")
        edits.append((node.start_mark.index, node.end_mark.index, _render(value, node)))
        changed.append(dotted)
    if not changed:
        return []
    new = text
    for start, end, rendered in sorted(edits, reverse=True):
        gap = re.match(r"( +)#", new[end:])  # a trailing comment stays in its column where it fits
        if gap and "\n" not in new[start:end]:
            spaces = max(1, len(gap.group(1)) + (end - start) - len(rendered))
            new = new[:start] + rendered + " " * spaces + new[end + len(gap.group(1)):]
        else:
            new = new[:start] + rendered + new[end:]
    result = yaml_io.parse(new, where)
    validate_params(result, params_path, where)
    if not all(_has(result, path) and _same(_get(result, path), value) for path, value in _leaves(params, fragment)):
        raise ConfigError(f"{where}: the edited text does not read back as the fragment's values; params.yaml left as it was")
    if params_path.read_text(encoding="utf-8") != text:
        raise ConfigError(f"{params_path}: changed by another program while {fragment_path} was applied; "
                          f"left as that program wrote it: apply the fragment again")
    write_text_atomically(params_path, new)
    return changed


def _get(data, path):
    for key in path:
        data = data[key]
    return data


def _has(data, path) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True
