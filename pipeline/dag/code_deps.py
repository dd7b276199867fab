"""The code each DVC stage runs, derived from what its entry point imports.

A stage's code dependencies (its ``pipeline/`` and ``stages/`` deps in dvc.yaml) are the files its
entry script imports, transitively: ``import pipeline.x`` and ``from pipeline.x import y`` anywhere in
a module (also inside functions) and a package's ``__init__``. A folder all of whose modules are
imported is listed as the folder. ``tests/test_dag.py`` checks dvc.yaml against this; after changing
what a stage imports, rewrite the code entries of every stage's deps with::

    python -m pipeline.dag.code_deps

Two things are not in those lists, so that adding or editing one backbone or method reruns only
its own runs: the registry's entries (:data:`TABLES`) and the modules a registry entry names (a
backbone's builder, a method's plug-in, imported through ``load_attribute``). A run's stages that
build its network (:data:`FINGERPRINTED`: search, train, export) depend instead on the run's *code
fingerprint* (:func:`fingerprint`): the files its entry point, its backbone's module and its
method's module import, each with its hash, and its two registry entries. The ``fingerprint``
stage rewrites these files whenever any code changes; one that comes out byte-equal leaves its
run up to date. The reference rows (:data:`FINGERPRINTED_ROWS`) follow a fingerprint per backbone
likewise, written by the ``fingerprint_rows`` stage. A training run's identity (pipeline/train/driver.py) hashes the same, less the
modules that only report (MLflow logging, paths).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path

from pipeline.settings import yaml_io

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pipeline"
TABLES = "pipeline/settings/registry.py"  # the entries: each run's fingerprint holds its own
FINGERPRINTED = {"train": "stages/train.py", "export": "stages/export.py",  # stage -> the entry its fingerprint follows
                 "search": "stages/search.py"}
# The rows that frame every method build a backbone too (in its CAM variant): per backbone, each
# follows its own fingerprint, written by the fingerprint_rows stage.
FINGERPRINTED_ROWS = {"features": "stages/features.py", "few_shot": "stages/few_shot.py"}
ROW_METHOD = "cam"  # the variant the rows' backbone is built in (pipeline/evaluation/reference_rows.py)
READS_TABLES = {"report"}  # its tables show every method's display name: it reruns on any entry's change
FINGERPRINTS = "fingerprints"  # <backbone>-<method>.<stage>.json, written by the fingerprint stage
# What the training workers import that cannot change what they compute.
REPORTING_ONLY = ("pipeline/dag/tracking.py", "pipeline/dag/paths.py")


def _module_file(name: str, root: Path) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(file: Path, root: Path) -> set[Path]:
    """The pipeline modules one file imports (and the packages they sit in)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from a package import a module
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


def _shared(files: set[Path], root: Path) -> set[Path]:
    return {f for f in files if f.resolve().relative_to(root.resolve()).as_posix() != TABLES}


def run_files(backbone: str, method: str, entry: Path, root: Path = ROOT) -> set[Path]:
    """What a run of ``backbone`` x ``method`` executes from ``entry``: its imports, and those of its
    backbone's builder module and its method's plug-in module, less :data:`TABLES`."""
    from pipeline.settings.registry import BACKBONES, METHODS  # the tables, read, never hashed as a file

    files = closure(entry, root)
    for name in (BACKBONES[backbone].builder, METHODS[method].implementation):
        module = _module_file(name.partition(":")[0], root)
        if module is None:
            raise ValueError(f"{name}: no such module under {root}")
        files |= closure(module, root)
    return _shared(files, root)


def run_entries(backbone: str, method: str) -> dict:
    """The registry's entries of the run's backbone and method, as JSON: what they build and how
    (not their display names or search spaces, which change no result), with the method's
    settings schema."""
    from pipeline.settings.registry import BACKBONES, METHODS

    spec = METHODS[method]
    return {"backbone": {key: value for key, value in asdict(BACKBONES[backbone]).items() if key != "display"},
            "method": {"architecture": spec.architecture, "implementation": spec.implementation,
                       "variant_of_icl": dict(spec.variant_of_icl or {}), "settings": spec.settings.model_json_schema()}}


def fingerprint(backbone: str, method: str, entry: Path, root: Path = ROOT, leave_out: tuple[str, ...] = ()) -> dict:
    """The code fingerprint of a run from ``entry``: its registry entries and every file of
    :func:`run_files` (less ``leave_out``) with its sha256."""
    root = root.resolve()
    paths = {f.resolve().relative_to(root).as_posix(): f for f in run_files(backbone, method, entry, root)}
    return {"backbone": backbone, "method": method, "entries": run_entries(backbone, method),
            "files": {name: hashlib.sha256(paths[name].read_bytes()).hexdigest()
                      for name in sorted(paths) if name not in leave_out}}


def identity_code(backbone: str, method: str, root: Path = ROOT) -> str:
    """The hash of what a training run's identity covers: the workers' code fingerprint, less
    :data:`REPORTING_ONLY`."""
    worker = root / PACKAGE / "train" / "worker.py"
    text = json.dumps(fingerprint(backbone, method, worker, root, REPORTING_ONLY), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_file(backbone: str, method: str | None, stage: str) -> str:
    """Where the fingerprint stage writes a run's fingerprint for ``stage``, or with no method where
    fingerprint_rows writes a backbone's for a reference row's ``stage`` (relative to the project)."""
    return f"{FINGERPRINTS}/{backbone}{'' if method is None else '-' + method}.{stage}.json"


def write_fingerprints(root: Path, backbone: str, method: str, entries: dict[str, str], named: str | None) -> None:
    """The fingerprint stages' work: the fingerprint of ``backbone`` x ``method`` from each stage's
    entry script (``entries``: stage -> script), at :func:`fingerprint_file` (``named``: its method;
    None for a reference row's), each replaced in one rename."""
    from pipeline.dag.paths import write_text_atomically

    for stage, entry in entries.items():
        path = root / fingerprint_file(backbone, named, stage)
        path.parent.mkdir(exist_ok=True)
        write_text_atomically(path, json.dumps(fingerprint(backbone, method, root / entry, root), indent=2) + "\n")


def stage_entries(dvc_file: Path) -> dict[str, Path]:
    """stage name -> the script its ``cmd`` runs (``python stages/<name>.py ...``)."""
    entries = {}
    dag = yaml_io.read(dvc_file)
    assert isinstance(dag, dict), dvc_file
    for name, stage in dag["stages"].items():
        script = next(word for word in stage["cmd"].split() if word.endswith(".py"))
        entries[name] = (dvc_file.parent / stage.get("wdir", ".") / script).resolve()
    return entries


def code_deps(dvc_file: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """stage name -> the code deps dvc.yaml should list for it: none for the stages that follow a
    fingerprint instead (and for the fingerprint stage, which depends on all code)."""
    deps = {}
    for name, entry in stage_entries(dvc_file).items():
        files = closure(entry, root)
        follows_fingerprint = name in FINGERPRINTED or name in FINGERPRINTED_ROWS
        deps[name] = [] if follows_fingerprint or name.startswith("fingerprint") else \
            as_deps(files if name in READS_TABLES else _shared(files, root), root)
    return deps


def is_code(dep: str) -> bool:
    return dep.startswith(("pipeline/", "stages/"))


def rewrite(dvc_file: Path, root: Path = ROOT) -> None:
    """Replace the code entries of each stage's ``deps:`` list in ``dvc_file`` (its other lines,
    comments included, stay as they are)."""
    lines = dvc_file.read_text().splitlines(keepends=True)
    wanted, out, stage = code_deps(dvc_file, root), list[str](), None
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
