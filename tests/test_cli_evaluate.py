"""`wsol evaluate-scoremaps` as a user runs it: the installed console script on .npy files."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.metrics import BoxRecords
from tests.helpers import write_box_metadata

WSOL = shutil.which("wsol", path=str(Path(sys.executable).parent)) or "wsol"


def run_wsol(*args):
    return subprocess.run([WSOL, *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def split(tmp_path):
    """Two images in nested folders: 'x/a.jpg' perfectly localised, 'y/b.jpg' not at all."""
    images = {"x/a.jpg": (1, (448, 448), [(80, 100, 279, 299)]), "y/b.jpg": (2, (224, 224), [(0, 0, 20, 20)])}
    write_box_metadata(tmp_path / "meta", images)
    blob = np.zeros((224, 224))
    blob[50:149, 40:139] = 1.0  # box (40, 50, 139, 149) = GT (80, 100, 279, 299) / 2
    for image_id in images:
        (tmp_path / "maps" / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "maps" / f"{image_id}.npy", blob)
    return tmp_path


def test_evaluates_a_scoremap_folder(split):
    (split / "pred.txt").write_text("x/a.jpg,1\ny/b.jpg,2\n")
    out = split / "results" / "r.json"
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps",
                    "--predictions", split / "pred.txt", "--single-contour", "--out", out)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["images"] == 2
    assert printed["maxboxacc"] == {"30": 50.0, "50": 50.0, "70": 50.0}
    assert printed["maxboxacc_v2"] == 50.0
    assert printed["top1_loc"] == 50.0 and printed["top1_cls"] == 100.0
    assert printed["single_contour"]["maxboxacc"]["50"] == 50.0
    written = json.loads(out.read_text())
    assert len(written["thresholds"]) == 100 and len(written["boxacc"]["70"]) == 100


@pytest.mark.parametrize("breakage, message", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: np.save(p, np.full((224, 224), np.nan)), "contains NaN"),
    (lambda p: np.save(p, np.full((224, 224), 2.0)), r"values must lie in \[0, 1\]"),
    (lambda p: np.save(p, np.zeros((1, 224, 224))), r"expected a 2-D \(224, 224\) array, got shape \(1, 224, 224\)"),
    (lambda p: p.write_bytes(b"not a numpy file"), "not a readable .npy file"),
    (lambda p: np.save(p, np.zeros((224, 224), np.uint8)),
     r"expected floating point values in \[0, 1\], got dtype uint8"),
    (lambda p: p.write_bytes(b""), "not a readable .npy file"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a readable .npy file"),  # truncated
    (lambda p: (p.unlink(), p.mkdir()), "is missing"),  # a folder where the file should be
])
def test_bad_scoremap_names_file_and_image(split, breakage, message):
    path = split / "maps" / "y" / "b.jpg.npy"
    breakage(path)
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps")
    assert done.returncode == 2
    assert "'y/b.jpg'" in done.stderr and re.search(message, done.stderr)
    assert str(path) in done.stderr


def test_any_float_npy_layout_reads_as_the_plain_one(split):
    # The fast reader reads C-order arrays of any plain dtype itself; Fortran order goes through np.load.
    args = ("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps")
    plain = run_wsol(*args)
    assert plain.returncode == 0, plain.stderr
    path = split / "maps" / "x" / "a.jpg.npy"
    blob = np.load(path)
    for stored in (blob.astype(np.float32), blob.astype(">f8"), np.asfortranarray(blob), blob.astype(np.float16)):
        np.save(path, stored)
        done = run_wsol(*args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == json.loads(plain.stdout), stored.dtype


def test_bootstrap_intervals_and_records(split):
    # One of the two images is localised at every tau and delta: a resample holds it 0, 1 or 2 times
    # (probabilities 1/4, 1/2, 1/4), so every localisation accuracy's 95 % interval is [0, 100]. Both
    # are classified right: top-1 cls is 100 in every resample.
    (split / "pred.txt").write_text("x/a.jpg,1\ny/b.jpg,2\n")
    out, records = split / "r.json", split / "records" / "r.npz"
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps",
                    "--predictions", split / "pred.txt", "--bootstrap", "400", "--records", records, "--out", out)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["ci95"] == {**{name: [0.0, 100.0] for name in (
        "maxboxacc_30", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "gt_known_loc", "top1_loc")},
        "top1_cls": [100.0, 100.0]}
    assert json.loads(out.read_text())["ci95"] == printed["ci95"]
    saved = BoxRecords.load(records)
    assert saved.image_ids.tolist() == ["x/a.jpg", "y/b.jpg"] and saved.classified.tolist() == [True, True]
    assert saved.hits()[0].all() and not saved.hits()[1].any()


def test_a_mean_over_other_iou_criteria_is_not_called_maxboxacc_v2(split):
    out = split / "r.json"
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps",
                    "--iou-thresholds", "40", "60", "--bootstrap", "50", "--out", out)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["maxboxacc_mean_40_60"] == 50.0 and "maxboxacc_v2" not in printed
    assert "maxboxacc_mean_40_60" in printed["ci95"] and "maxboxacc_v2" not in printed["ci95"]
    assert json.loads(out.read_text())["maxboxacc_mean_40_60"] == 50.0


def test_no_bootstrap_by_default(split):
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps")
    assert done.returncode == 0, done.stderr
    assert "ci95" not in json.loads(done.stdout)


@pytest.mark.parametrize("value", ["-1", "2.5", "many"])
def test_bad_bootstrap_count_is_named(split, value):
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps",
                    "--bootstrap", value)
    assert done.returncode == 2
    assert f"argument --bootstrap: expected a whole number of resamples >= 0, got '{value}'" in done.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "argument --batch-size: expected a whole number >= 1, got '0'"),
    ("--batch-size", "-1", "argument --batch-size: expected a whole number >= 1, got '-1'"),
    ("--out", "maps", "argument --out: '{}' is a folder; expected the name of a file to write"),
    ("--records", "maps", "argument --records: '{}' is a folder; expected the name of a file to write"),
])
def test_bad_arguments_are_refused_before_any_work(split, option, value, message):
    value = str(split / value) if value == "maps" else value
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps",
                    option, value)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"wsol evaluate-scoremaps: error: {message.format(value)}"


def test_an_image_id_outside_the_scoremap_root_is_refused(split):
    write_box_metadata(split / "meta", {"../escape": (1, (224, 224), [(0, 0, 20, 20)])})
    np.save(split / "escape.npy", np.zeros((224, 224)))  # beside the score-map root, not in it
    done = run_wsol("evaluate-scoremaps", "--metadata-root", split / "meta", "--scoremap-root", split / "maps")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"wsol evaluate-scoremaps: error: {split / 'meta' / 'image_ids.txt'}:1: image id "
                                        f"'../escape' climbs out with '..': it must be a path under its root"]


def test_out_replaces_the_file_whole(split, monkeypatch, capsys):
    # A reader must see the old file or the new one, never a partial one: the result is written
    # beside --out and moved onto it in one os.replace.
    out = split / "results" / "r.json"
    out.parent.mkdir()
    out.write_text("{}\n")
    moves, real_replace = [], os.replace

    def replace(src, dst):
        if Path(dst) == out:
            moves.append((Path(src).parent, json.loads(Path(src).read_text())))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["evaluate-scoremaps", "--metadata-root", str(split / "meta"), "--scoremap-root", str(split / "maps"),
                 "--out", str(out)]) == 0
    assert moves == [(out.parent, json.loads(out.read_text()))] and "boxacc" in moves[0][1]
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]
