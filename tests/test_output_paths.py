"""Output paths never destroy what is there: a folder of someone else's given as --out is refused
(unless --force), no writer deletes a file it did not write, a place that cannot be written is
refused before any work, and a full disk leaves the old file whole and no partial one."""

import errno
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.dag.paths import (
    MANIFEST,
    Layout,
    OutputError,
    check_output_folder,
    replaced_atomically,
    write_text_atomically,
)
from pipeline.evaluation.evaluate import evaluate
from pipeline.settings.config import load_config
from tests.helpers import params

USER_FILES = {"thesis.txt": "four years of work\n", "paper.tex": "\\documentclass{article}\n"}
UNWRITABLE = Path("/sys/kernel")  # a folder no one may create anything in, not even root


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params()))
    return path


def commands(tmp_path: Path, params_file: Path) -> dict[str, list[str]]:
    """Each command that writes a folder, on inputs that do not exist: any work would fail on them."""
    return {
        "evaluate": ["evaluate", str(tmp_path / "no-export"), "--params", str(params_file)],
        "export": ["export", str(tmp_path / "no-run"), "--params", str(params_file)],
        "import-checkpoint": ["import-checkpoint", str(tmp_path / "no-checkpoint.pth"), "--from", "wsolevaluation",
                              "--backbone", "resnet50", "--method", "cam", "--params", str(params_file)],
    }


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, text in USER_FILES.items():
        (path / name).write_text(text)
    return path


def assert_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(USER_FILES)
    assert all((folder / name).read_text() == text for name, text in USER_FILES.items())
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}")) == []


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.splitlines()
    return line


@pytest.mark.parametrize("command", ["evaluate", "export", "import-checkpoint"])
def test_a_folder_of_someone_elses_is_refused_naming_it_and_kept(tmp_path, params_file, capsys, command):
    out = user_folder(tmp_path / "my-thesis")
    assert main([*commands(tmp_path, params_file)[command], "--out", str(out)]) == 2
    assert error_line(capsys) == (f"wsol {command}: error: {out}: not written: it holds what wsol did not write "
                                  f"(paper.tex, thesis.txt); choose another folder, or give --force to write into it "
                                  f"(those files are kept, any of the names wsol writes replaced)")
    assert_untouched(out)


@pytest.mark.parametrize("command", ["evaluate", "export", "import-checkpoint"])
def test_force_or_a_folder_of_ours_lets_the_work_start(tmp_path, params_file, capsys, command):
    ours = tmp_path / "ours"
    with replaced_atomically(ours) as staging:
        (staging / "metrics.json").write_text("{}\n")
    for argv in (["--out", str(user_folder(tmp_path / "theirs")), "--force"], ["--out", str(ours)]):
        assert main([*commands(tmp_path, params_file)[command], *argv]) == 2
        assert "not written" not in error_line(capsys)  # it failed on the missing input, after the check
    assert_untouched(tmp_path / "theirs")  # the work failed: nothing was replaced
    assert (ours / "metrics.json").read_text() == "{}\n"


@pytest.mark.parametrize("command", ["evaluate", "export", "import-checkpoint"])
@pytest.mark.parametrize("where, reason", [
    (lambda tmp: tmp / "a-file" / "out", "{tmp}/a-file is a file, not a folder"),
    (lambda tmp: tmp / "a-file" / "deeper" / "out", "{tmp}/a-file is a file, not a folder"),
    (lambda tmp: tmp / ("x" * 250), "File name too long"),
    (lambda tmp: UNWRITABLE / "out", "Operation not permitted" if os.geteuid() == 0 else "Permission denied"),
])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, params_file, capsys, command, where,
                                                                   reason):
    if not UNWRITABLE.is_dir():
        pytest.skip(f"no {UNWRITABLE} here")
    (tmp_path / "a-file").write_text("")
    out = where(tmp_path)
    before = sorted(tmp_path.iterdir())
    assert main([*commands(tmp_path, params_file)[command], "--out", str(out)]) == 2
    assert error_line(capsys) == f"wsol {command}: error: {out}: cannot write there: {reason.format(tmp=tmp_path)}"
    assert sorted(tmp_path.iterdir()) == before and (tmp_path / "a-file").read_text() == ""


@pytest.mark.parametrize("option", ["--out", "--records"])
def test_a_file_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, option):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "r.json"
    assert main(["evaluate-scoremaps", "--metadata-root", str(tmp_path / "no-meta"), "--scoremap-root",
                 str(tmp_path / "no-maps"), option, str(out)]) == 2
    assert error_line(capsys) == (f"wsol evaluate-scoremaps: error: {out}: cannot write there: {tmp_path / 'a-file'} "
                                  f"is a file, not a folder")


def test_localize_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / ("x" * 250)
    assert main(["localize", str(tmp_path / "no-image.png"), "--model", str(tmp_path / "no-model"),
                 "--out", str(out)]) == 2
    assert error_line(capsys) == f"wsol localize: error: {out}: cannot write there: File name too long"


def test_no_writer_deletes_what_it_did_not_write(tmp_path):
    # Where every stage and command writes a folder: files of someone else's (a user's, DVC's
    # .gitignore) are carried into the new folder, and stay someone else's.
    out = user_folder(tmp_path / "out")
    (out / "notes").mkdir()
    (out / "notes" / "draft.txt").write_text("draft")
    for run in ("first", "second"):
        with replaced_atomically(out) as staging:
            (staging / "metrics.json").write_text(run)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "metrics.json", "notes", *USER_FILES])
    assert all((out / name).read_text() == text for name, text in USER_FILES.items())
    assert (out / "notes" / "draft.txt").read_text() == "draft" and (out / "metrics.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputError, match=r"not written: it holds what wsol did not write \(notes, paper.tex"):
        check_output_folder(out)  # still someone else's: --out refuses it


@pytest.mark.parametrize("force", [False, True])
def test_a_file_of_someone_elses_is_replaced_only_with_force(tmp_path, force):
    out = tmp_path / "out"
    with replaced_atomically(out) as staging:
        (staging / "metrics.json").write_text("old")
    (out / "boxacc.csv").write_text("mine")  # a name this writer did not write there, and now writes
    try:
        with replaced_atomically(out, force) as staging:
            for name in ("metrics.json", "boxacc.csv"):
                (staging / name).write_text("new")
    except OutputError as error:
        assert not force and str(error) == (f"{out}: not replaced: it holds boxacc.csv, which wsol did not write "
                                            f"there; move them, or give --force to replace them")
    written = {name: (out / name).read_text() for name in ("metrics.json", "boxacc.csv")}
    assert written == ({"metrics.json": "new", "boxacc.csv": "new"} if force else
                       {"metrics.json": "old", "boxacc.csv": "mine"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("manifest", ["{not json", '{"written_by": "someone", "entries": ["thesis.txt"]}',
                                      '["thesis.txt"]', '{"written_by": "wsol-pipeline", "entries": 3}'])
def test_a_manifest_we_did_not_write_does_not_make_a_folder_ours(tmp_path, manifest):
    out = user_folder(tmp_path / "out")
    (out / MANIFEST).write_text(manifest)
    with pytest.raises(OutputError, match=r"\(paper.tex, thesis.txt\)"):
        check_output_folder(out)


@pytest.mark.parametrize("exists", [True, False])
def test_a_full_disk_leaves_the_old_file_whole_and_no_partial_one(tmp_path, monkeypatch, exists):
    target = tmp_path / "r.json"
    if exists:
        target.write_text("old\n")
    real_write = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write(self, "", *args, **kwargs)  # the file is created, then nothing fits
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError) as error:
        write_text_atomically(target, "new\n")
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r.json"] if exists else [])
    if exists:
        assert target.read_text() == "old\n"


@pytest.mark.slow
def test_evaluate_replaces_its_own_results_and_a_user_folder_only_with_force(saved_project, tmp_path, capsys):
    layout, _, _ = saved_project
    export_folder = layout.export("synth", "resnet50", "cam", 0)
    argv = ["evaluate", str(export_folder), "--params", str(layout.root / "params.yaml"), "--out"]
    out = user_folder(tmp_path / "results")
    assert main([*argv, str(out)]) == 2 and "not written" in error_line(capsys)
    assert_untouched(out)
    assert main([*argv, str(out), "--force"]) == 0
    assert (out / "metrics.json").is_file() and (out / "thesis.txt").read_text() == USER_FILES["thesis.txt"]
    ours = tmp_path / "ours"
    for _ in range(2):  # a folder of ours is rewritten without --force
        assert main([*argv, str(ours)]) == 0
    assert (ours / "metrics.json").is_file()


def test_the_evaluate_stage_rewrites_its_folder_keeping_dvcs_gitignore(saved_project, tmp_path):
    """A stage's output folder holds DVC's .gitignore (git tracks it): the stage is no --out and
    must neither refuse the folder nor lose that file."""
    layout = Layout(tmp_path / "p")
    shutil.copytree(saved_project[0].root, layout.root)
    folder = layout.results("synth", "resnet50", "cam", 0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitignore").write_text("/records\n")
    (folder / "metrics.json").unlink(missing_ok=True)  # DVC removes a stage's outputs before it runs
    evaluate(load_config(layout.root / "params.yaml"), layout, "resnet50", "cam", 0)
    assert (folder / ".gitignore").read_text() == "/records\n"
    assert (folder / "metrics.json").is_file() and MANIFEST in os.listdir(folder)
