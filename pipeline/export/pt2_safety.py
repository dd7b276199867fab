"""Loading a ``.pt2`` file that nobody vouches for without running code it carries.

``torch.export.load`` (torch/export/pt2_archive/_package.py, torch/_export/serde/serialize.py) runs
what the archive says in five ways: it unpickles weights and constants marked ``use_pickle``,
custom and opaque objects, legacy ``data/weights/<model>.pt`` files and, when ``weights_only``
fails, the sample inputs; it loads AOTInductor's shared libraries under ``data/aotinductor/``; it
``sympy.sympify``s (``eval``) every symbolic-shape expression of the program; it compiles the
program's guards (Python source) into a function; and it calls any callable a node's dotted
target names under ``torch``, ``operator`` or ``math``. :func:`load_program` admits only what
``torch.export.save`` writes for a plain program such as the export stage's, checked on the bytes it
then loads (no second read of the file): tensor payloads, nodes calling ATen operators, and
expressions within a small allow-listed part of Python.

This module imports nothing of the pipeline: the MLflow model (pipeline/export/pyfunc_network.py) carries
it as its one code dependency.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path

import torch
from torch.export import ExportedProgram

MODEL = "model"  # the program's name inside the archive: torch.export.save writes one, "model"
TENSOR_ENTRIES = re.compile(r"data/weights/weight_\d+|data/constants/tensor_\d+")
PLAIN_ENTRIES = {
    "archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
    f"models/{MODEL}.json", f"data/sample_inputs/{MODEL}.pt",
    f"data/weights/{MODEL}_weights_config.json", f"data/constants/{MODEL}_constants_config.json",
}
EXTRA = re.compile(r"extra/[\w.-]+")  # extra_files: read as text
PAYLOAD_NAMES = {"data/weights/": re.compile(r"weight_\d+"), "data/constants/": re.compile(r"tensor_\d+")}

# ATen operators (torch.ops.aten.<op>.<overload>) and tuple indexing are all a network's graph needs
ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
OTHER_TARGETS = {"_operator.getitem"}

# what symbolic shapes and guards are written in: sympy's constructors and torch's sympy functions
# (the deserializer's ``sympy_functions``), symbols such as s37, and guards such as L['x'].size()[0]
EXPRESSION_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "oo", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv",
    "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity", "L",
}
SYMBOL = re.compile(r"[a-z]{1,4}\d+")
TENSOR_METHODS = {"size", "stride", "storage_offset", "dim"}
EXPRESSION_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Call, ast.keyword,
                    ast.Subscript, ast.Attribute, ast.Name, ast.Constant, ast.Load, ast.operator, ast.cmpop,
                    ast.boolop, ast.unaryop)


class UnsafeProgramError(ValueError):
    """A .pt2 that loading would run code from, or not a plain torch.export program; the message names the entry."""


def load_program(path: Path, extra_files: dict[str, str] | None = None) -> ExportedProgram:
    """The torch.export program of the .pt2 at ``path``, after :func:`check_archive` on the bytes it is
    loaded from (an UnsafeProgramError naming the file and the entry); ``extra_files`` as in
    ``torch.export.load``."""
    data = Path(path).read_bytes()
    try:
        check_archive(data)
    except UnsafeProgramError as error:
        raise UnsafeProgramError(f"{path}: {error}") from None
    return torch.export.load(io.BytesIO(data), extra_files=extra_files)


def check_archive(data: bytes) -> None:
    """Refuse (UnsafeProgramError) a .pt2 whose loading would unpickle, load a library or evaluate code."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise UnsafeProgramError(f"not a zip archive ({error})") from None
    entries = _entries(archive)
    for entry in entries:
        if entry not in PLAIN_ENTRIES and not TENSOR_ENTRIES.fullmatch(entry) and not EXTRA.fullmatch(entry):
            raise UnsafeProgramError(f"{entry}: not an entry of a plain torch.export program (AOTInductor libraries, "
                                     "pickled objects and legacy pickled weights are refused)")

    def read(entry: str) -> bytes | None:
        return archive.read(entries[entry]) if entry in entries else None

    for directory, kind in (("data/weights/", "weights"), ("data/constants/", "constants")):
        config = f"{directory}{MODEL}_{kind}_config.json"
        if (text := read(config)) is not None:
            _check_payloads(config, _json(config, text), directory)
    sample_inputs = f"data/sample_inputs/{MODEL}.pt"
    if (saved := read(sample_inputs)) is not None:
        try:  # torch tries weights_only=True first, and unpickles freely if that fails
            torch.load(io.BytesIO(saved), weights_only=True)
        except Exception:  # unpickling errors have many types
            raise UnsafeProgramError(f"{sample_inputs}: holds more than tensors (loading it would unpickle)") from None
    program = f"models/{MODEL}.json"
    if (text := read(program)) is not None:
        _check_program(program, _json(program, text))


def _entries(archive: zipfile.ZipFile) -> dict[str, str]:
    """The archive's entry names below its one root folder (which torch ignores) -> their full names."""
    compressed = [info.filename for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    if compressed:  # torch writes every entry stored: what is read is then never more than the file
        raise UnsafeProgramError(f"{compressed[0]}: a compressed entry; torch.export.save stores every entry as is")
    names = [name for name in archive.namelist() if not name.endswith("/")]
    if len(set(names)) != len(names):
        raise UnsafeProgramError("an entry name occurs twice (which one loads is up to the reader)")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UnsafeProgramError(f"entries under {len(roots)} root folders; torch.export.save writes one")
    return {name.split("/", 1)[1]: name for name in names}


def _json(entry: str, text: bytes) -> object:
    try:
        return json.loads(text)
    except ValueError as error:
        raise UnsafeProgramError(f"{entry}: not valid JSON: {error}") from None


def _check_payloads(config: str, payloads: object, directory: str) -> None:
    """Every weight or constant of ``config`` a raw tensor in the archive, none pickled."""
    items = payloads.get("config") if isinstance(payloads, dict) else None
    if not isinstance(items, dict):
        raise UnsafeProgramError(f"{config}: not a payload config ({{'config': {{name: payload}}}})")
    for name, payload in items.items():
        if not isinstance(payload, dict) or payload.get("use_pickle") is not False:
            raise UnsafeProgramError(f"{config}: {name} is stored as a pickle, which loading would run")
        stored = payload.get("path_name")
        if not isinstance(stored, str) or not PAYLOAD_NAMES[directory].fullmatch(stored):
            raise UnsafeProgramError(f"{config}: {name} is stored as {stored!r}, not a raw tensor")


def _check_program(entry: str, program: object) -> None:
    """Every node of the serialized program calls an ATen operator (or indexes a tuple), and every
    symbolic expression and guard is in :data:`EXPRESSION_NAMES`' small part of Python."""
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str):
            _check_target(entry, value)
        elif key == "expr_str":
            _check_expression(entry, value)
        elif key == "guards_code":
            for guard in value if isinstance(value, list) else [value]:
                _check_expression(entry, guard)


def _walk(value: object, key: str | None = None):
    """(key, value) of every item of every JSON object inside ``value``, depth first."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield name, item
            yield from _walk(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)


def _check_target(entry: str, target: str) -> None:
    aten = ATEN_TARGET.fullmatch(target)
    if target in OTHER_TARGETS or (aten and _is_aten_overload(*aten.groups())):
        return
    raise UnsafeProgramError(f"{entry}: a node calls {target!r}, not an ATen operator")


def _is_aten_overload(op: str, overload: str) -> bool:
    packet = getattr(torch.ops.aten, op, None)  # the operator registry's entry (or an attribute: no OpOverload)
    return isinstance(getattr(packet, overload, None), torch._ops.OpOverload)


def _check_expression(entry: str, source: object) -> None:
    """``source`` uses only names of :data:`EXPRESSION_NAMES` or symbols, tensor shape methods and
    constants: what ``sympy.sympify`` or the guards' ``eval`` may run without reaching anything else."""
    if not isinstance(source, str):
        raise UnsafeProgramError(f"{entry}: an expression that is no string: {_shown(source)}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise UnsafeProgramError(f"{entry}: not an expression: {_shown(source)}") from None
    for node in ast.walk(tree):
        if (not isinstance(node, EXPRESSION_NODES)
                or isinstance(node, ast.Name) and node.id not in EXPRESSION_NAMES and not SYMBOL.fullmatch(node.id)
                or isinstance(node, ast.Attribute) and node.attr not in TENSOR_METHODS):
            raise UnsafeProgramError(f"{entry}: an expression beyond symbolic shapes and guards: {_shown(source)}")


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 100 else shown[:97] + "..."
