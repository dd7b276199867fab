"""Writing an output folder so that a reader never sees it half written, and never in place of a
folder of someone else's."""

import json

import pytest

from pipeline.dag.paths import MANIFEST, replaced_atomically


def written(out, files: dict[str, str]) -> None:
    """``out`` as replaced_atomically writes it, holding these files."""
    with replaced_atomically(out) as staging:
        for name, text in files.items():
            (staging / name).write_text(text)


def test_a_finished_block_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    written(out, {"old.txt": "old"})
    with replaced_atomically(out) as staging:
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").is_file()  # still the old folder while the new one is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "new.txt"])
    assert json.loads((out / MANIFEST).read_text()) == {"written_by": "wsol-pipeline", "entries": ["new.txt"]}


def test_a_failed_block_leaves_the_old_folder_and_no_debris(tmp_path):
    out = tmp_path / "out"
    written(out, {"old.txt": "old"})
    with pytest.raises(RuntimeError):
        with replaced_atomically(out) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "old"


def test_the_first_write_creates_the_folder(tmp_path):
    with replaced_atomically(tmp_path / "a" / "b") as staging:
        (staging / "x").write_text("1")
    assert (tmp_path / "a" / "b" / "x").read_text() == "1"
