"""Model files we did not write: a .pt2 that would run code on loading is refused before anything
of it runs, every field of meta.json and model.json is checked as strictly as params, and weights
with NaN or infinite values are refused after training, before export and on import.

The hostile .pt2 files are real exports of a tiny network, rewritten as an attacker would: each
runs ``touch <marker>`` under plain ``torch.export.load`` (checked here too), and must not under
the pipeline."""

import contextlib
import io
import json
import math
import os
import pickle
import re
import shlex
import zipfile
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
import yaml

from pipeline.cli import main
from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, experiment_id, open_run
from pipeline.export import pt2_safety
from pipeline.export.export import ExportError, _verdict
from pipeline.export.pt2_safety import UnsafeProgramError
from pipeline.export.served_model import NETWORK_CODE
from pipeline.formats.export_folder import META, ExportMeta
from pipeline.formats.finite_weights import NonFiniteWeightsError
from pipeline.formats.run_folder import RunMeta, save_run
from pipeline.models.reference_checkpoint import import_checkpoint
from pipeline.train.outputs import write_outputs
from tests.helpers import config, params


class Touch:
    """Unpickled, runs ``touch marker`` (the payload of a hostile pickle)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class TinyNetwork(torch.nn.Module):
    """An exported network's interface with one weight: logits (B, 2), CAMs (B, 224, 224) in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cams = torch.sigmoid(torch.nn.functional.interpolate(images[:, :1], size=(224, 224))).squeeze(1)
        return self.fc(images.mean((2, 3))), cams


META_FIELDS = asdict(ExportMeta("synth", "resnet50", "cam", 2, ["a", "b"], 0.5, input_size=8, mean=[0.5] * 3,
                                std=[0.5] * 3, mlflow_run_id=None))


def exported(path: Path, meta: dict = META_FIELDS) -> Path:
    """TinyNetwork as the export stage saves a network: a dynamic batch, ``meta`` as its meta.json."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(TinyNetwork().eval(), (torch.zeros(2, 3, 8, 8), torch.tensor([0, -1])),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, path, extra_files={META: json.dumps(meta)})
    return path


def rewritten(path: Path, change) -> Path:
    """The .pt2 at ``path`` with ``change`` applied to its entries (names below the archive's root folder)."""
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/")[0]
        entries = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    change(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(f"{root}/{name}", data)
    return path


def saved(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# torch/export/pt2_archive/_package.py: _load_state_dict unpickles a weight marked use_pickle
def pickled_weight(entries: dict, marker: Path) -> None:
    config_name = "data/weights/model_weights_config.json"
    weights = json.loads(entries[config_name])
    payload = weights["config"]["fc.weight"]
    payload["use_pickle"] = True
    entries[f"data/weights/{payload['path_name']}"] = saved(Touch(marker))
    entries[config_name] = json.dumps(weights).encode()


# _load_constants: pickle.loads of an opaque object
def pickled_constant(entries: dict, marker: Path) -> None:
    config_name = "data/constants/model_constants_config.json"
    constants = json.loads(entries[config_name])
    constants["config"]["extra"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}
    entries["data/constants/opaque_obj_0"] = pickle.dumps(Touch(marker))
    entries[config_name] = json.dumps(constants).encode()


# torch/_export/serde/serialize.py: deserialize_torch_artifact falls back to weights_only=False
def pickled_sample_inputs(entries: dict, marker: Path) -> None:
    entries["data/sample_inputs/model.pt"] = saved(Touch(marker))


# _parse_sym_expr: sympy.sympify (eval) of each symbolic shape
def evaluated_expression(entries: dict, marker: Path) -> None:
    program = entries["models/model.json"].decode()
    symbol = re.search(r"\"expr_str\": \"(Symbol\('(\w+)'[^\"]*)\"", program)
    hostile = f"Symbol('{symbol[2]}', positive=True, integer=True) + 0 * __import__('os').system('touch {marker}')"
    entries["models/model.json"] = program.replace(symbol[0], f'"expr_str": {json.dumps(hostile)}').encode()


# torch/export/_unlift.py: the guards are compiled into the module's Python code
def evaluated_guard(entries: dict, marker: Path) -> None:
    program = json.loads(entries["models/model.json"])
    program["guards_code"].append(f"__import__('os').system('touch {marker}') == 0")
    entries["models/model.json"] = json.dumps(program).encode()


HOSTILE = {
    pickled_weight: "data/weights/model_weights_config.json: fc.weight is stored as a pickle",
    pickled_constant: "data/constants/opaque_obj_0: not an entry of a plain torch.export program",
    pickled_sample_inputs: "data/sample_inputs/model.pt: holds more than tensors",
    evaluated_expression: "models/model.json: an expression beyond symbolic shapes and guards",
    evaluated_guard: "models/model.json: an expression beyond symbolic shapes and guards",
}


def stderr_lines(capsys) -> list[str]:
    """What a failed command wrote to stderr, which holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


@pytest.mark.parametrize("attack", HOSTILE, ids=lambda attack: attack.__name__)
def test_a_model_that_would_run_code_is_refused_before_it_runs(tmp_path, capsys, attack):
    marker = tmp_path / "marker"
    model = rewritten(exported(tmp_path / "model.pt2"), lambda entries: attack(entries, marker))
    assert main(["localize", str(tmp_path / "image.png"), "--model", str(model)]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol localize: error: {model}: {HOSTILE[attack]}")
    assert not marker.exists()
    # the file is truly hostile: plain torch.export.load (and the module's first call) runs its command
    with contextlib.suppress(Exception):  # what a pickle returns is no tensor: loading then fails
        torch.export.load(model).module()(torch.zeros(2, 3, 8, 8), torch.tensor([0, -1]))
    assert marker.exists()


def test_the_mlflow_model_refuses_a_model_that_would_run_code(tmp_path):
    """The MLflow model loads its model.pt2 through the same check, from the copy of it that it carries."""
    marker = tmp_path / "marker"
    model = rewritten(exported(tmp_path / "model.pt2"), lambda entries: pickled_weight(entries, marker))
    mlflow.pyfunc.save_model(tmp_path / "served", python_model=str(NETWORK_CODE), code_paths=[pt2_safety.__file__],
                             artifacts={"network": str(model)})
    artifact = tmp_path / "served" / "artifacts" / "model.pt2"  # MLflow's copy
    with pytest.raises(UnsafeProgramError, match=re.escape(f"{artifact}: {HOSTILE[pickled_weight]}")):
        mlflow.pyfunc.load_model(str(tmp_path / "served"))
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update({"data/aotinductor/model/model.so": b"\x7fELF"}),
     "data/aotinductor/model/model.so: not an entry of a plain torch.export program"),
    (lambda e: e.update({"data/weights/model.pt": saved({"fc.weight": torch.zeros(2, 3)})}),
     "data/weights/model.pt: not an entry of a plain torch.export program"),
    (lambda e: e.update({"models/model.json": e["models/model.json"].replace(b"torch.ops.aten.linear.default",
                                                                             b"torch.save")}),
     "models/model.json: a node calls 'torch.save', not an ATen operator"),
])
def test_archives_beyond_a_plain_program_are_refused_naming_the_entry(tmp_path, capsys, change, message):
    model = rewritten(exported(tmp_path / "model.pt2"), change)
    assert main(["localize", str(tmp_path / "image.png"), "--model", str(model)]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol localize: error: {model}: {message}")


def test_a_compressed_entry_is_refused_before_it_is_decompressed(tmp_path, capsys):
    """A deflated entry could decompress to far more than the file holds (a zip bomb): torch stores
    every entry as is, so one that is compressed is refused from its header."""
    model = exported(tmp_path / "model.pt2")
    with zipfile.ZipFile(model) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(model, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    assert torch.export.load(model) is not None  # a valid program all the same
    assert main(["localize", str(tmp_path / "image.png"), "--model", str(model)]) == 2
    [line] = stderr_lines(capsys)
    assert re.match(rf"wsol localize: error: {re.escape(str(model))}: \S+: a compressed entry", line)


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params()))
    return path


def test_evaluate_refuses_a_model_that_would_run_code(tmp_path, params_file, capsys):
    marker, folder = tmp_path / "marker", tmp_path / "export"
    folder.mkdir()
    rewritten(exported(folder / "model.pt2"), lambda entries: pickled_weight(entries, marker))
    assert main(["evaluate", str(folder), "--params", str(params_file), "--out", str(tmp_path / "out")]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol evaluate: error: {folder / 'model.pt2'}: {HOSTILE[pickled_weight]}")
    assert not marker.exists()


@pytest.mark.parametrize("key, value, message", [
    ("class_names", [], "class_names: expected 1 to 100000 items, got []"),
    ("class_names", ["a", "a"], "class_names: expected distinct non-blank names"),
    ("class_names", ["a", 2], "class_names: expected a list of strings"),
    ("num_classes", 3, "class_names: 2 names for num_classes 3"),
    ("num_classes", True, "num_classes: expected an integer, got True"),
    ("input_size", "224", "input_size: expected an integer, got '224'"),
    ("input_size", 100_000, "input_size: expected a number in [8, 4096]"),
    ("cam_threshold", 7, "cam_threshold: expected a number in [0, 1], got 7"),
    ("cam_threshold", math.nan, "cam_threshold: expected a finite number, got nan"),
    ("mean", [0.5, 0.5], "mean: expected 3 items"),
    ("std", [0.5, 0.0, 0.5], "std: expected positive numbers"),
    ("std", [0.5, math.inf, 0.5], "std: expected a list of finite numbers"),
    ("backbone", "resnet9000", "backbone: expected one of"),
    ("mlflow_run_id", 12, "mlflow_run_id: expected a string or null, got 12"),
])
def test_every_field_of_meta_json_is_checked_as_params_are(tmp_path, capsys, key, value, message):
    model = exported(tmp_path / "model.pt2", {**META_FIELDS, key: value})
    assert main(["localize", str(tmp_path / "image.png"), "--model", str(model)]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol localize: error: {model} ({META}): {message}")


@pytest.fixture
def run_folder(tmp_path):
    """A run folder whose model.json is sound and whose model.pt holds one finite tensor."""
    folder = tmp_path / "run"
    save_run(folder, {"fc.weight": torch.zeros(3, 2)},
             RunMeta(dataset="synth", backbone="resnet50", method="cam", num_classes=3, class_names=["a", "b", "c"],
                     cam_threshold=0.4, settings=config().run("resnet50", "cam").as_json()))
    return folder


@pytest.mark.parametrize("key, value, message", [
    ("cam_threshold", 7, "cam_threshold: expected a number in [0, 1], got 7"),
    ("class_names", [], "class_names: expected 1 to 100000 items"),
    ("num_classes", "3", "num_classes: expected an integer, got '3'"),
    ("restarts", -1, "restarts: expected a number of at least 0, got -1"),
    ("settings", [], "settings: expected a JSON object, got []"),
    ("schema_version", 7, "schema_version 7 is newer than this wsol reads (up to 2)"),
    ("dataset", "../../etc", "dataset: expected one of synth"),
])
def test_every_field_of_model_json_is_checked(run_folder, params_file, capsys, key, value, message):
    meta = json.loads((run_folder / "model.json").read_text())
    (run_folder / "model.json").write_text(json.dumps({**meta, key: value}))
    assert main(["export", str(run_folder), "--params", str(params_file), "--out", str(run_folder.parent / "out")]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol export: error: {run_folder / 'model.json'}: {message}")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_run_folder_with_non_finite_weights_is_not_exported(run_folder, params_file, capsys, bad):
    torch.save({"fc.weight": torch.tensor([[0.0, bad]] * 3), "fc.bias": torch.zeros(3)}, run_folder / "model.pt")
    assert main(["export", str(run_folder), "--params", str(params_file), "--out", str(run_folder.parent / "out")]) == 2
    [line] = stderr_lines(capsys)
    assert line == (f"wsol export: error: {run_folder / 'model.pt'}: 1 of 2 tensors hold NaN or infinite values "
                    "(fc.weight)")
    assert not (run_folder.parent / "out").exists()


def test_an_export_whose_network_computes_nan_is_refused():
    """NaN > tolerance is False: the verdict must not take NaN for agreement."""
    with pytest.raises(ExportError, match=r"model\.pt2: exported outputs differ from the eager model by nan"):
        _verdict("model.pt2", {"logits": 0.0, "cams": math.nan}, 1e-4)


def test_a_reference_checkpoint_with_non_finite_weights_is_not_imported(tmp_path):
    path = tmp_path / "last_checkpoint.pth.tar"
    weights = {f"layer{k}.weight": torch.full((2,), math.nan if k % 2 else 1.0) for k in range(12)}
    torch.save({"state_dict": {**weights, "fc.weight": torch.zeros(5, 2)}}, path)
    with pytest.raises(NonFiniteWeightsError) as refused:
        import_checkpoint(path, "resnet50", "cam", config())
    assert str(refused.value) == (f"{path}: 6 of 13 tensors hold NaN or infinite values (layer1.weight, layer3.weight, "
                                  "layer5.weight, layer7.weight and 2 more)")


def test_training_that_diverged_writes_no_run_folder_and_fails_its_mlflow_run(tmp_path):
    layout = Layout(tmp_path)
    client = client_for(layout)
    run_id = open_run(client, experiment_id(client, "synth", layout), "synth-resnet50-cam", "key", {}, {}, layout.root)
    state = {"a.weight": torch.ones(2), "b.weight": torch.tensor([1.0, math.inf]), "b.bias": torch.tensor([math.nan])}
    trained = SimpleNamespace(backbone="resnet50", method="cam", seed=0, state_dict=state, mlflow_run_id=run_id,
                              selected_epoch=7)
    out = layout.run("synth", "resnet50", "cam", 0)
    with pytest.raises(NonFiniteWeightsError) as refused:
        write_outputs(trained, config(), layout)
    assert str(refused.value) == f"run {out} (epoch 7): 2 of 3 tensors hold NaN or infinite values (b.weight, b.bias)"
    assert not out.exists() and client.get_run(run_id).info.status == "FAILED"
