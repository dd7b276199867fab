"""The code each DVC stage runs, derived from what its entry point imports.

A stage's code dependencies (its ``pipeline/`` and ``stages/`` deps in dvc.yaml) are the files its
entry script imports, transitively: ``import pipeline.x`` and ``from pipeline.x import y`` anywhere in
a module (also inside functions), a package's ``__init__``, and, for a module that calls
``load_attribute``, every implementation the registry names as a ``"pipeline.module:attribute"``
string. A folder all of whose modules are imported is listed as the folder. ``tests/test_dag.py`` checks dvc.yaml against this; after changing what a stage imports, rewrite
the code entries of every stage's deps with::

    python -m pipeline.code_deps

A training run's identity (pipeline/train/driver.py) hashes only the code that can change its
result: what the workers import, less the modules that only report (MLflow logging, paths).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pipeline import yaml_io

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"
NAMED = re.compile(r"^(pipeline(?:\.\w+)+):\w+$")  # an implementation named in the registry
LOADER = "load_attribute"  # pipeline/registry.py: imports what such a name names
# What the training workers import that cannot change what they compute.
REPORTING_ONLY = ("pipeline/tracking.py", "pipeline/paths.py")


def _module_file(name: str, root: Path) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _registered(root: Path) -> set[str]:
    """The modules the registry names as implementations."""
    tree = ast.parse((root / PACKAGE / "registry.py").read_text())
    return {node.value.partition(":")[0] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAMED.match(node.value)}


def _imports(file: Path, root: Path) -> set[Path]:
    """The pipeline modules one file imports (and the packages they sit in)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from a package import a module
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == LOADER:
            names.update(_registered(root))
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        for end in range(1, len(parts) + 1):  # every package on the way is imported too
            module = _module_file(".".join(parts[:end]), root)
            if module is not None:
                found.add(module)
    return found


def closure(entry: Path, root: Path = ROOT) -> set[Path]:
    """The entry file and every pipeline module it imports, transitively."""
    seen, todo = set(), [entry.resolve()]
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(_imports(file, root) - seen)
    return seen


def as_deps(files: set[Path], root: Path = ROOT) -> list[str]:
    """Relative paths, a folder in place of its modules when every module under it is there."""
    files = {f.resolve() for f in files}
    folders = {f.parent for f in files if f.parent != root}
    whole = {d for d in folders if set(d.rglob("*.py")) <= files}
    top = {d for d in whole if not any(parent in whole for parent in d.parents)}
    kept = top | {f for f in files if not any(parent in top for parent in f.parents)}
    return sorted(p.relative_to(root).as_posix() for p in kept)


def identity_code(root: Path = ROOT) -> list[Path]:
    """The modules a training run's identity hashes: the workers' code, less REPORTING_ONLY."""
    worker = root / PACKAGE / "train" / "worker.py"
    root = root.resolve()
    return sorted(f for f in closure(worker, root) if f.relative_to(root).as_posix() not in REPORTING_ONLY)


def stage_entries(dvc_file: Path) -> dict[str, Path]:
    """stage name -> the script its ``cmd`` runs (``python stages/<name>.py ...``)."""
    entries = {}
    for name, stage in yaml_io.read(dvc_file)["stages"].items():
        script = next(word for word in stage["cmd"].split() if word.endswith(".py"))
        entries[name] = (dvc_file.parent / stage.get("wdir", ".") / script).resolve()
    return entries


def code_deps(dvc_file: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """stage name -> the code deps dvc.yaml should list for it."""
    return {name: as_deps(closure(entry, root), root) for name, entry in stage_entries(dvc_file).items()}


def is_code(dep: str) -> bool:
    return dep.startswith(("pipeline/", "stages/"))


def rewrite(dvc_file: Path, root: Path = ROOT) -> None:
    """Replace the code entries of each stage's ``deps:`` list in ``dvc_file`` (its other lines,
    comments included, stay as they are)."""
    lines = dvc_file.read_text().splitlines(keepends=True)
    wanted, out, stage = code_deps(dvc_file, root), [], None
    for line in lines:
        name = re.match(r"^  (\w+):\s*$", line)
        if name:
            stage = name.group(1)
        item = re.match(r"^      - (\S+)\s*$", line)
        if item and is_code(item.group(1)) and stage in wanted:
            out.extend(f"      - {dep}\n" for dep in wanted.pop(stage))
            continue
        if not (item and is_code(item.group(1))):
            out.append(line)
    dvc_file.write_text("".join(out))


if __name__ == "__main__":
    rewrite(ROOT / "dvc.yaml")
    print(f"dvc.yaml: code deps of {', '.join(code_deps(ROOT / 'dvc.yaml'))} written")
