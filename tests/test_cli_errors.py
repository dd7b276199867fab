"""Folders and files of the wrong kind given to `wsol export` and `wsol evaluate`, and --out
arguments that name the wrong kind of path: one line naming the file, exit status 2."""

import pytest
import torch
import yaml

from pipeline.cli import main
from pipeline.formats.run_folder import RunMeta, save_run
from tests.helpers import config, params


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params()))
    return path


@pytest.fixture
def run_folder(tmp_path):
    """A run folder whose model.json is sound and whose model.pt holds no weights yet."""
    folder = tmp_path / "run"
    save_run(folder, {}, RunMeta(dataset="synth", backbone="resnet50", method="cam", num_classes=3, class_names=["a", "b", "c"],
                                 cam_threshold=0.4, settings=config().run("resnet50", "cam").as_json()))
    return folder


def stderr_lines(capsys) -> list[str]:
    """What a failed command wrote to stderr, which holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


@pytest.mark.parametrize("name, breakage, message", [
    ("model.pt", lambda p: p.write_text("not weights"), "not a state dict saved by torch.save"),
    ("model.pt", lambda p: torch.save({"fc.weight": torch.zeros(3, 2)}, p),
     "not the weights of the resnet50-cam model its model.json describes (Error(s) in loading state_dict"),
    ("model.json", lambda p: p.write_text("{not json"), "not valid JSON: Expecting property name"),
    ("model.json", lambda p: p.unlink(), "is missing: run the train stage first"),
])
def test_export_of_a_run_folder_of_the_wrong_kind(run_folder, params_file, capsys, name, breakage, message):
    breakage(run_folder / name)
    assert main(["export", str(run_folder), "--params", str(params_file), "--out", str(run_folder.parent / "out")]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol export: error: {run_folder / name}") and message in line
    assert not (run_folder.parent / "out").exists()


@pytest.mark.parametrize("breakage, message", [
    (lambda folder: (folder / "model.pt2").write_text("not a model"), "not a torch.export program"),
    (lambda folder: None, "no exported model there"),
])
def test_evaluate_of_an_export_folder_of_the_wrong_kind(tmp_path, params_file, capsys, breakage, message):
    folder = tmp_path / "export"
    folder.mkdir()
    breakage(folder)
    assert main(["evaluate", str(folder), "--params", str(params_file), "--out", str(tmp_path / "out")]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wsol evaluate: error: {folder / 'model.pt2'}: ") and message in line


@pytest.mark.parametrize("command", [
    ["export", "run"], ["evaluate", "export"],
    ["import-checkpoint", "checkpoint.pth", "--from", "wsolevaluation", "--backbone", "resnet50", "--method", "cam"],
])
def test_an_out_folder_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, command):
    out = tmp_path / "a-file"
    out.write_text("")
    with pytest.raises(SystemExit) as exited:  # before the missing params.yaml and inputs are looked for
        main([*command, "--params", str(tmp_path / "missing.yaml"), "--out", str(out)])
    assert exited.value.code == 2
    assert stderr_lines(capsys)[-1] == (f"wsol {command[0]}: error: argument --out: '{out}' is a file; expected the name of "
                                  "a folder to write")


def test_the_version_and_every_default_are_shown(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"wsol {version('wsol-pipeline')}\n"
    with pytest.raises(SystemExit):
        main(["evaluate-scoremaps", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.01)" in shown and "(default: [30, 50, 70])" in shown and "(default: 64)" in shown
    assert "(default: None)" not in shown and "(default: False)" not in shown
    with pytest.raises(SystemExit):
        main(["params", "apply", "--help"])
    assert "(default: params.yaml)" in capsys.readouterr().out
