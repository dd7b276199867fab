"""Downloads against a real HTTP server on 127.0.0.1: verified, atomic, resumable."""

import hashlib

import pytest

from pipeline.config import Source
from pipeline.data.download import ChecksumError, DownloadError, fetch
from tests.http_server import FileServer

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with FileServer() as s:
        s.behaviour.files["/data.bin"] = PAYLOAD
        yield s


def source(server, checksum=SHA, paths=("/data.bin",)):
    return Source(urls=[server.url(p) for p in paths], checksum=checksum, filename="data.bin")


def test_download_is_verified_and_leaves_no_partial_file(server, tmp_path):
    path = fetch(source(server), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    fetch(source(server), tmp_path)  # already there and verified: no second request
    assert len(server.behaviour.requests) == 1


def test_md5_checksums_are_accepted(server, tmp_path):
    assert fetch(source(server, "md5:" + hashlib.md5(PAYLOAD).hexdigest()), tmp_path).read_bytes() == PAYLOAD


def test_wrong_checksum_names_file_and_both_sums_and_leaves_nothing(server, tmp_path):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumError) as error:
        fetch(source(server, wrong), tmp_path)
    message = str(error.value)
    assert str(tmp_path / "data.bin") in message and wrong in message and SHA in message
    assert list(tmp_path.iterdir()) == []


def test_a_connection_cut_half_way_resumes_with_a_range_request(server, tmp_path):
    server.behaviour.cut_after["/data.bin"] = 300_000
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", None), ("/data.bin", "bytes=300000-")]


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:123_456])
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", "bytes=123456-")]


def test_a_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.behaviour.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must not survive")
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD


def test_mirrors_are_tried_in_order(server, tmp_path):
    assert fetch(source(server, paths=("/gone.bin", "/data.bin")), tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"every mirror failed:\n  .*/gone\.bin: HTTP Error 404"):
        fetch(Source(urls=[server.url("/gone.bin")], checksum=SHA, filename="other.bin"), tmp_path)
    assert not (tmp_path / "other.bin").exists()


def test_without_a_published_sum_the_first_download_is_recorded_and_then_enforced(server, tmp_path):
    path = fetch(source(server, checksum=None), tmp_path)
    assert (tmp_path / "data.bin.sha256").read_text().strip() == SHA.removeprefix("sha256:")
    path.write_bytes(PAYLOAD[:-1] + b"x")  # corrupted on disk
    server.behaviour.files["/data.bin"] = PAYLOAD[:-1] + b"y"  # and the server now serves other bytes
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch(source(server, checksum=None), tmp_path)
    assert path.read_bytes() == PAYLOAD[:-1] + b"x"  # the old file is not destroyed by a failed replacement


def test_a_stale_copy_is_replaced_once_the_new_one_verifies(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"an older version")
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
