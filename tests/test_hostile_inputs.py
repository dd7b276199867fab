"""Files we did not write, built by hand to escape or mislead: ids and mask paths that leave their
root, metadata in another encoding, a PNG bomb, a .npy whose header lies, a locked or corrupt MLflow
store and a dead Ray cluster. Each gets a one-line error naming it (or a warning), never a traceback,
an allocation the size of its claim, or lost work."""

import codecs
import json
import logging
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.cli import main
from pipeline.dag.paths import Layout
from pipeline.dag.tracking import client_for, experiment_id, open_run
from pipeline.data.dataset_folder import DatasetError, write_dataset
from pipeline.data.metadata import MetadataError, load_metadata, read_image_ids
from pipeline.data.sources.custom import folder_tables
from pipeline.metrics import evaluate_scoremap_folder
from tests.helpers import write_box_metadata

WSOL = Path(sys.executable).with_name("wsol")


def _png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height RGB pixels, followed by one row of data: a few
    hundred bytes on disk however large the claim (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\0" * (3 * width + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b""))
    return path


def _custom(root: Path, ids: dict[str, list[str]] | None = None) -> Path:
    """A custom dataset folder: one 16x16 image per split (``images/<split>.png``, class 0, one box)
    unless ``ids`` names each split's image ids (whose files the caller writes)."""
    for split in ("train", "val", "test"):
        names = (ids or {}).get(split, [f"images/{split}.png"])
        for name in names:
            if ids is None:
                (root / "images").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), (200, 30, 30)).save(root / name)
        write_box_metadata(root / "metadata" / split, {name: (0, (16, 16), [(2, 2, 10, 10)]) for name in names})
    return root


# ---- one rule for relative paths read from metadata --------------------------------------------

@pytest.mark.parametrize("image_id, fault", [
    ("/etc/passwd", "is absolute"),
    ("../outside.png", "climbs out with '..'"),
    ("images/../../outside.png", "climbs out with '..'"),
    ("..\\outside.png", "climbs out with '..'"),
    ("C:\\Windows\\win.ini", "is absolute"),
    ("\\\\server\\share\\x.png", "is absolute"),
    ("images/a.png\0.txt", "holds a NUL byte"),
])
def test_an_image_id_that_could_leave_its_root_is_refused_naming_file_line_and_id(tmp_path, image_id, fault):
    (tmp_path / "image_ids.txt").write_text(f"images/ok.png\n{image_id}\n")
    with pytest.raises(MetadataError) as error:
        read_image_ids(tmp_path / "image_ids.txt")
    assert str(error.value).startswith(f"{tmp_path / 'image_ids.txt'}:2: image id {image_id!r} {fault}")


def test_a_custom_dataset_with_an_id_outside_its_root_is_refused_by_the_split_stage(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16)).save(secret)
    root = _custom(tmp_path / "custom")
    write_box_metadata(root / "metadata" / "val", {"../secret.png": (0, (16, 16), [(2, 2, 10, 10)])})
    with pytest.raises(DatasetError) as error:
        folder_tables("custom", root)
    assert f"val: {root / 'metadata/val/image_ids.txt'}:1: image id '../secret.png' climbs out with '..'" in str(error.value)


def test_an_image_reached_through_a_symbolic_link_out_of_the_root_is_a_problem_of_the_split(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16)).save(secret)
    root = _custom(tmp_path / "custom")
    (root / "images" / "val.png").unlink()
    (root / "images" / "val.png").symlink_to(secret)
    with pytest.raises(DatasetError) as error:
        write_dataset(folder_tables("custom", root), tmp_path / "out")
    assert (f"val: {root / 'metadata/val/image_ids.txt'}:1: image id 'images/val.png' leads to {secret} "
            f"through a symbolic link") in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_mask_path_that_leaves_the_mask_root_is_refused_naming_file_line_and_image(tmp_path):
    write_box_metadata(tmp_path, {"a.png": (0, (16, 16), [(0, 0, 4, 4)])})
    (tmp_path / "localization.txt").write_text("a.png,masks/a.png,\na.png,../../etc/shadow,\n")
    with pytest.raises(MetadataError) as error:
        load_metadata(tmp_path, "masks")
    assert str(error.value).startswith(f"{tmp_path / 'localization.txt'}:2: image 'a.png': mask path "
                                       f"'../../etc/shadow' climbs out with '..'")


def _maps(tmp_path: Path) -> tuple[Path, Path]:
    """(metadata folder, score-map folder) of one image 'x.png' and its all-zero map."""
    meta = write_box_metadata(tmp_path / "meta", {"x.png": (0, (224, 224), [(0, 0, 20, 20)])})
    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "x.png.npy", np.zeros((224, 224)))
    return meta, tmp_path / "maps"


def test_a_score_map_or_mask_linked_out_of_its_root_is_refused(tmp_path):
    meta, maps = _maps(tmp_path)
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((224, 224)))
    (maps / "x.png.npy").unlink()
    (maps / "x.png.npy").symlink_to(outside)
    with pytest.raises(MetadataError) as error:
        evaluate_scoremap_folder(meta, maps)
    assert str(error.value) == (f"{meta / 'image_ids.txt'}:1: image 'x.png': score map 'x.png.npy' leads to {outside} "
                                f"through a symbolic link: it must name a file under {maps}")

    (maps / "x.png.npy").unlink()
    np.save(maps / "x.png.npy", np.zeros((224, 224)))
    (meta / "localization.txt").write_text("x.png,m.png,\n")
    (tmp_path / "masks").mkdir()
    Image.new("L", (224, 224)).save(tmp_path / "m.png")
    (tmp_path / "masks" / "m.png").symlink_to(tmp_path / "m.png")
    with pytest.raises(MetadataError, match="image 'x.png': mask 'm.png' leads to .* through a symbolic link"):
        evaluate_scoremap_folder(meta, maps, mask_root=tmp_path / "masks")


# ---- metadata in another encoding ----------------------------------------------------------------

def test_latin1_metadata_is_refused_naming_file_line_and_byte_offset(tmp_path):
    write_box_metadata(tmp_path, {"a.png": (0, (16, 16), [(0, 0, 4, 4)]), "b.png": (1, (16, 16), [(0, 0, 4, 4)])})
    (tmp_path / "class_labels.txt").write_bytes("a.png,0\ncaf\u00e9.png,1\n".encode("latin-1"))
    with pytest.raises(MetadataError) as error:
        load_metadata(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'class_labels.txt'}:2: not UTF-8: byte 0xe9 at byte offset 11; "
                                "metadata files must be UTF-8 text")


def test_utf16_metadata_is_refused_at_its_first_byte(tmp_path):
    write_box_metadata(tmp_path, {"a.png": (0, (16, 16), [(0, 0, 4, 4)])})
    (tmp_path / "image_ids.txt").write_bytes("a.png\n".encode("utf-16"))  # with its byte order mark
    with pytest.raises(MetadataError) as error:
        load_metadata(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'image_ids.txt'}:1: not UTF-8: byte 0xff at byte offset 0 "
                                       "(a UTF-16 byte order mark)")


def test_a_utf8_byte_order_mark_is_read_past(tmp_path):
    write_box_metadata(tmp_path, {"a.png": (0, (16, 16), [(0, 0, 4, 4)])})
    plain = load_metadata(tmp_path)
    for name in ("image_ids.txt", "class_labels.txt", "localization.txt"):
        path = tmp_path / name
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert load_metadata(tmp_path) == plain


# ---- a PNG bomb ----------------------------------------------------------------------------------

def test_a_png_bomb_joins_the_split_stage_list_of_problems(tmp_path):
    root = _custom(tmp_path / "custom")
    _png(root / "images" / "val.png", 20000, 20000)  # over Pillow's own limit
    _png(root / "images" / "test.png", 8000, 8000)  # under Pillow's, over ours
    (root / "images" / "train.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError) as error:
        write_dataset(folder_tables("custom", root), tmp_path / "out")
    message = str(error.value)
    assert "3 problem(s) found" in message and "cannot decode image" in message
    assert f"val: image 'images/val.png': {root / 'images/val.png'}: declares more pixels than the cap" in message
    assert f"test: image 'images/test.png': {root / 'images/test.png'}: declares 8000x8000 pixels, over the cap" in message


def test_localize_reports_a_png_bomb_and_localizes_the_images_beside_it(saved_project, tmp_path, capsys):
    layout, _, info = saved_project
    good = info.image_path("test", info.metadata("test").image_ids[0])
    bomb = _png(tmp_path / "bomb.png", 20000, 20000)
    model = layout.export("synth", "resnet50", "cam", 0) / "model.pt2"
    status = main(["localize", str(bomb), str(good), "--model", str(model)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.splitlines() == [f"wsol localize: error: {bomb}: declares more pixels than the cap of "
                                         f"50,000,000 (MAX_PIXELS): Image size (400000000 pixels) exceeds limit of "
                                         f"178956970 pixels, could be decompression bomb DOS attack."]
    assert [found["image"] for found in json.loads(captured.out)] == [str(good)]


# ---- a .npy whose header lies --------------------------------------------------------------------

def _lying_npy(path: Path, shape: tuple[int, ...], data_bytes: int) -> None:
    """A float64 .npy whose header claims ``shape`` and which holds ``data_bytes`` bytes of data."""
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(b"\0" * data_bytes)


def _limited(*args: str) -> subprocess.CompletedProcess:
    """``wsol`` with its address space capped at 8 GiB: a refused claim costs nothing, an honoured
    one fails instead of taking the machine's memory."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))"
    return subprocess.run([sys.executable, "-c", f"{limit}; from pipeline.cli import main; raise SystemExit(main())",
                           *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("shape, data_bytes, claim", [
    ((100000, 100000), 400_000, "larger than a (224, 224) score map"),  # 74.5 GiB claimed
    ((224, 224), 1000, "bytes with the header, the file has"),  # truncated
    ((224, 224), 224 * 224 * 8 + 5, "bytes with the header, the file has"),  # data after the array
])
def test_a_npy_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path, shape, data_bytes, claim):
    meta, maps = _maps(tmp_path)
    _lying_npy(maps / "x.png.npy", shape, data_bytes)
    done = _limited("evaluate-scoremaps", "--metadata-root", str(meta), "--scoremap-root", str(maps))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"wsol evaluate-scoremaps: error: score map of image 'x.png': "
                                                   f"{maps / 'x.png.npy'} is not a readable .npy file: its header claims")
    assert claim in done.stderr


# ---- a locked or corrupt MLflow store ------------------------------------------------------------

def _store_with_run(root: Path) -> tuple[Layout, str]:
    layout = Layout(root)
    root.mkdir()
    client = client_for(layout)
    return layout, open_run(client, experiment_id(client, "synth", layout), "r", "key", {}, {}, root)


def _log_after_the_work(layout: Layout, run_id: str, out: Path) -> None:
    """What a stage does once its work is done: write its result, then record it in MLflow."""
    from pipeline.dag.tracking import store_failure_warns

    out.write_text("result\n")
    with store_failure_warns(layout, f"test scores of run {run_id}"):
        client_for(layout).log_metric(run_id, "test_top1_loc", 50.0)
    out.with_suffix(".done").write_text("after\n")


def test_a_corrupt_store_costs_a_warning_naming_it(tmp_path):
    layout, run_id = _store_with_run(tmp_path / "p")
    layout.mlflow_db.write_bytes(np.random.default_rng(0).bytes(200_000))
    code = (f"import logging, sys; logging.basicConfig(); from pathlib import Path; from tests.test_hostile_inputs "
            f"import _log_after_the_work; from pipeline.dag.paths import Layout; "
            f"_log_after_the_work(Layout(Path({str(layout.root)!r})), {run_id!r}, Path({str(tmp_path / 'r.txt')!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])  # a fresh process: no store cached from before
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.txt").read_text() == "result\n" and (tmp_path / "r.done").is_file()
    assert (f"test scores of run {run_id}: not recorded in the MLflow store sqlite:///{layout.mlflow_db}, which "
            f"failed: (sqlite3.DatabaseError) file is not a database") in done.stderr
    assert "Traceback" not in done.stderr


def test_a_locked_store_costs_a_warning_naming_it(tmp_path, caplog):
    layout, run_id = _store_with_run(tmp_path / "p")
    lock = sqlite3.connect(layout.mlflow_db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than MLflow waits
    try:
        with caplog.at_level(logging.WARNING, "pipeline.dag.tracking"):
            _log_after_the_work(layout, run_id, tmp_path / "r.txt")
    finally:
        lock.close()
    assert (tmp_path / "r.txt").read_text() == "result\n" and (tmp_path / "r.done").is_file()
    assert [r.getMessage() for r in caplog.records if r.name == "pipeline.dag.tracking"] == [f"test scores of run {run_id}: not recorded in the MLflow store "
                               f"sqlite:///{layout.mlflow_db}, which failed: (sqlite3.OperationalError) database is locked"]


def test_an_evaluation_on_a_corrupt_store_writes_its_results_and_warns(saved_project, tmp_path):
    """The evaluate stage end to end (a copy of a project with an export and its MLflow run): the store
    turned to random bytes costs one warning, never the finished scores."""
    layout = Layout(tmp_path / "p")
    shutil.copytree(saved_project[0].root, layout.root)
    layout.mlflow_db.write_bytes(np.random.default_rng(1).bytes(200_000))
    out = tmp_path / "results"
    code = ("import logging; logging.basicConfig(); from pathlib import Path; from pipeline.settings.config import load_config; "
            "from pipeline.evaluation.evaluate import evaluate_exported; from pipeline.dag.paths import Layout; "
            f"layout = Layout(Path({str(layout.root)!r})); "
            "evaluate_exported(layout.export('synth', 'resnet50', 'cam', 0) / 'model.pt2', "
            f"load_config(layout.root / 'params.yaml'), layout, Path({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])  # a fresh process: no store cached from before
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["images"] == 12  # 3 classes x 4 test images
    assert "not recorded in the MLflow store" in done.stderr and "file is not a database" in done.stderr
    assert "Traceback" not in done.stderr


# ---- a dead Ray cluster --------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


def test_a_dead_ray_address_fails_the_train_stage_at_once_naming_it_and_the_run_is_failed(tmp_path):
    from tests.conftest import SAVED
    from tests.helpers import make_project

    layout = make_project(tmp_path / "p", **SAVED)
    address = f"127.0.0.1:{_closed_port()}"
    code = ("import sys, time; from pathlib import Path; from pipeline.settings.config import load_config; "
            "from pipeline.dag.paths import Layout; from pipeline.train.driver import fit; "
            f"layout = Layout(Path({str(layout.root)!r})); config = load_config(layout.root / 'params.yaml'); "
            "start = time.monotonic()\n"
            "try:\n    fit(config, layout, 'resnet50', 'cam', 0)\n"
            "except Exception as error:\n    print(type(error).__name__, round(time.monotonic() - start, 1), error)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_ADDRESS": address}, cwd=Path(__file__).parents[1])
    name, seconds, message = done.stdout.strip().split(" ", 2)
    assert name == "ClusterError" and float(seconds) < 30, done.stdout + done.stderr
    assert message.startswith(f"Ray cluster at {address} ($RAY_ADDRESS): no connection within 10 s")
    runs = MlflowClient(f"sqlite:///{layout.mlflow_db}").search_runs(
        [experiment_id(client_for(layout), "synth", layout)])
    assert [run.info.status for run in runs] == ["FAILED"]


@pytest.mark.parametrize("error, status", [
    (RuntimeError("diverged"), "FAILED"), (SystemExit(1), "FAILED"),
    (KeyboardInterrupt(), "KILLED"), (SystemExit(0), "KILLED"),  # Ctrl-C; Ray Tune stopping a trial (sys.exit(0))
])
def test_a_run_that_raises_ends_failed_unless_it_was_asked_to_stop(tmp_path, error, status):
    from pipeline.dag.tracking import ended_on_error

    layout, run_id = _store_with_run(tmp_path / "p")
    client = client_for(layout)
    with pytest.raises(type(error)), ended_on_error(client, run_id, layout):
        raise error
    assert client.get_run(run_id).info.status == status
