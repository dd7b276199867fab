"""Writing an output folder so that a reader never sees it half written."""

import pytest

from pipeline.paths import replaced_atomically


def test_a_finished_block_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with replaced_atomically(out) as staging:
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").is_file()  # still the old folder while the new one is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_a_failed_block_leaves_the_old_folder_and_no_debris(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
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
