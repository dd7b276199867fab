"""Downloads against a real HTTP server on 127.0.0.1: verified, atomic, resumable only onto the
same entity, format-checked where no sum is published (every archive member decompressed whole),
bounded in size and time, http(s) only."""

import gzip
import hashlib
import io
import socket
import tarfile
import time
import zipfile

import pytest

from pipeline.data import download
from pipeline.data.download import ChecksumError, DownloadError, fetch
from pipeline.settings.config import Source
from tests.helpers import tarball, zipped
from tests.http_server import FileServer, etag

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
HTML = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


SHA = sha(PAYLOAD)
ARCHIVE = tarball({"a.jpg": PAYLOAD[:4096], "b.jpg": PAYLOAD[:200_000]}, gzip=False)  # a.jpg ends at byte 512 + 4096


def zip_corrupted_at(offset: int, byte: int | None = None) -> bytes:
    """A deflated zip of a.jpg (6,400 random bytes), its byte at offset flipped (or set to byte). Its local
    header is 30 bytes and the name; the deflate stream starts at byte 35."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.jpg", b"".join(hashlib.sha256(bytes([i])).digest() for i in range(200)))  # incompressible
    data = bytearray(out.getvalue())
    data[offset] = data[offset] ^ 1 if byte is None else byte
    return bytes(data)


def tar_with_a_member_longer_than_its_header() -> bytes:
    """a.jpg's header says 512 bytes, 1024 follow; then b.jpg: tarfile reads a.jpg and stops at the
    surplus, silently, as at the end of the archive."""
    a, b = tarfile.TarInfo("a.jpg"), tarfile.TarInfo("b.jpg")
    a.size = b.size = 512
    return a.tobuf() + PAYLOAD[:1024] + b.tobuf() + PAYLOAD[:512] + bytes(1024)


@pytest.fixture
def server():
    with FileServer() as s:
        s.behaviour.files["/data.bin"] = PAYLOAD
        yield s


def source(server, checksum=SHA, paths=("/data.bin",), filename="data.bin"):
    return Source(urls=[server.url(p) for p in paths], checksum=checksum, filename=filename)


@pytest.fixture
def interrupted(server, tmp_path, monkeypatch):
    """The .part left by an earlier run whose connection was cut after 300,000 bytes."""
    attempts = download.ATTEMPTS
    monkeypatch.setattr(download, "ATTEMPTS", 1)
    server.behaviour.cut_after["/data.bin"] = 300_000
    with pytest.raises(DownloadError):
        fetch(source(server), tmp_path)
    monkeypatch.setattr(download, "ATTEMPTS", attempts)
    server.behaviour.requests.clear()
    server.behaviour.if_ranges.clear()
    return tmp_path / "data.bin.part"


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


def test_a_wrong_checksum_on_one_mirror_falls_back_to_the_next(server, tmp_path):
    server.behaviour.files["/bad.bin"] = PAYLOAD[::-1]
    assert fetch(source(server, paths=("/bad.bin", "/data.bin")), tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError) as error:
        fetch(source(server, paths=("/bad.bin", "/gone.bin"), filename="other.bin"), tmp_path)
    message = str(error.value)
    assert "/bad.bin: " in message and "checksum mismatch" in message and "/gone.bin: HTTP Error 404" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_a_connection_cut_half_way_resumes_with_a_range_request(server, tmp_path):
    server.behaviour.cut_after["/data.bin"] = 300_000
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", None), ("/data.bin", "bytes=300000-")]
    assert server.behaviour.if_ranges == [None, etag(PAYLOAD)]


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path, interrupted):
    assert interrupted.stat().st_size == 300_000
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", "bytes=300000-")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_a_partial_file_of_unknown_origin_is_not_resumed(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"other bytes" * 1000)
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", None)]


def test_a_server_ignoring_range_restarts_the_file(server, tmp_path, interrupted):
    server.behaviour.ignore_range = True
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", "bytes=300000-")]  # its 200 is the whole file


def test_a_416_for_a_partial_file_longer_than_the_file_starts_over(server, tmp_path, interrupted):
    interrupted.write_bytes(PAYLOAD + b"stale tail")
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD
    assert server.behaviour.requests == [("/data.bin", f"bytes={len(PAYLOAD) + 10}-"), ("/data.bin", None)]


def test_an_entity_changed_between_attempts_is_fetched_whole(server, tmp_path):
    new = PAYLOAD[::-1]
    server.behaviour.cut_after["/data.bin"] = 300_000
    server.behaviour.after_cut["/data.bin"] = new
    assert fetch(source(server, sha(new)), tmp_path).read_bytes() == new
    assert server.behaviour.requests == [("/data.bin", None), ("/data.bin", "bytes=300000-")]
    assert server.behaviour.if_ranges == [None, etag(PAYLOAD)]  # If-Range failed: the server sent a 200


def test_a_206_of_another_entity_starts_over(server, tmp_path):
    new = PAYLOAD[::-1]
    server.behaviour.ignore_if_range = True  # it sends the range of the new entity, with the new ETag
    server.behaviour.cut_after["/data.bin"] = 300_000
    server.behaviour.after_cut["/data.bin"] = new
    assert fetch(source(server, sha(new)), tmp_path).read_bytes() == new
    assert server.behaviour.requests == [("/data.bin", None), ("/data.bin", "bytes=300000-"), ("/data.bin", None)]


def test_mirrors_are_tried_in_order(server, tmp_path):
    assert fetch(source(server, paths=("/gone.bin", "/data.bin")), tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"every mirror failed:\n  .*/gone\.bin: HTTP Error 404"):
        fetch(Source(urls=[server.url("/gone.bin")], checksum=SHA, filename="other.bin"), tmp_path)
    assert not (tmp_path / "other.bin").exists()


def test_without_a_published_sum_the_first_download_is_recorded_and_then_enforced(server, tmp_path):
    server.behaviour.files["/CUBV2.tar"] = ARCHIVE
    path = fetch(source(server, None, ("/CUBV2.tar",), "CUBV2.tar"), tmp_path)
    assert (tmp_path / "CUBV2.tar.sha256").read_text().strip() == sha(ARCHIVE).removeprefix("sha256:")
    path.write_bytes(ARCHIVE[:-1] + b"x")  # corrupted on disk
    server.behaviour.files["/CUBV2.tar"] = tarball({"c.jpg": b"another archive"}, gzip=False)  # and the server serves another
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch(source(server, None, ("/CUBV2.tar",), "CUBV2.tar"), tmp_path)
    assert path.read_bytes() == ARCHIVE[:-1] + b"x"  # the old file is not destroyed by a failed replacement


@pytest.mark.parametrize("name, body, complaint", [
    ("CUBV2.tar", HTML, "looks like an HTML page"),
    ("cub_val_image_ids.txt", HTML, "looks like an HTML page"),
    ("cub_val_image_ids.txt", b"\xff\xfe\x00binary", "not UTF-8 text"),
], ids=["html-archive", "html-text", "binary-text"])
def test_without_a_sum_a_file_failing_its_format_check_is_refused_and_not_recorded(server, tmp_path, name, body,
                                                                                      complaint):
    server.behaviour.files[f"/{name}"] = body
    with pytest.raises(DownloadError, match=f"every mirror failed:\n  .*/{name}: .*/{name}: {complaint}"):
        fetch(source(server, None, (f"/{name}",), name), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, body, cut", [
    ("CUBV2.tar", ARCHIVE, 100_000),  # inside a member
    ("CUBV2.tar", ARCHIVE, 512 + 4096),  # between members: only the end-of-archive block is missing
    ("imagenetv2-threshold0.7.tar.gz", gzip.compress(ARCHIVE), 500),
    ("OpenImages_images.zip", zipped({"a.jpg": PAYLOAD[:100_000]}), 50_000),
], ids=["tar-in-member", "tar-between-members", "tgz", "zip"])
def test_without_a_sum_a_200_cut_short_without_length_fails_its_format_check_and_the_next_mirror_is_used(
        server, tmp_path, name, body, cut):
    server.behaviour.files.update({f"/cut/{name}": body, f"/{name}": body})
    server.behaviour.no_length.add(f"/cut/{name}")
    server.behaviour.cut_after[f"/cut/{name}"] = cut
    assert fetch(source(server, None, (f"/cut/{name}", f"/{name}"), name), tmp_path).read_bytes() == body
    assert (tmp_path / f"{name}.sha256").read_text().strip() == sha(body).removeprefix("sha256:")


def test_a_file_already_there_without_a_sum_or_record_is_format_checked(server, tmp_path):
    (tmp_path / "CUBV2.tar").write_bytes(HTML)
    server.behaviour.files["/CUBV2.tar"] = ARCHIVE
    assert fetch(source(server, None, ("/CUBV2.tar",), "CUBV2.tar"), tmp_path).read_bytes() == ARCHIVE
    assert (tmp_path / "CUBV2.tar.sha256").read_text().strip() == sha(ARCHIVE).removeprefix("sha256:")


def test_a_file_without_a_sum_or_a_format_check_is_refused_before_downloading(server, tmp_path):
    with pytest.raises(DownloadError, match="no format check for this kind of file.*put its checksum"):
        fetch(source(server, None), tmp_path)
    assert server.behaviour.requests == []


def test_a_redirect_to_http_is_followed_and_one_to_ftp_refused(server, tmp_path, monkeypatch):
    server.behaviour.redirects["/moved.bin"] = server.url("/data.bin")
    assert fetch(source(server, paths=("/moved.bin",)), tmp_path).read_bytes() == PAYLOAD
    monkeypatch.setattr(download, "TIMEOUT", 1)  # a client that followed it would wait for an FTP greeting
    with socket.create_server(("127.0.0.1", 0)) as ftp:
        server.behaviour.redirects["/ftp.bin"] = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/data.bin"
        with pytest.raises(DownloadError, match="/ftp.bin: HTTP Error 302: refused a redirect to ftp://"):
            fetch(source(server, paths=("/ftp.bin",), filename="other.bin"), tmp_path)
        ftp.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing connected to it
            ftp.accept()


@pytest.mark.parametrize("url", ["file://{secret}", "data:text/plain,hello", "ftp://127.0.0.1:9/x.txt"])
def test_a_url_other_than_http_is_refused_at_download_time(tmp_path, url):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download\n")
    unchecked = Source.model_construct(urls=[url.format(secret=secret)], checksum=None, filename="x.txt")
    with pytest.raises(DownloadError, match="only https and http URLs are fetched"):
        fetch(unchecked, tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists()


def test_a_file_name_other_than_a_plain_one_is_refused_at_download_time(server, tmp_path):
    server.behaviour.files["/escaped.txt"] = b"text\n"
    unchecked = Source.model_construct(urls=[server.url("/escaped.txt")], checksum=None, filename="../escaped.txt")
    with pytest.raises(DownloadError, match="refused the file name '../escaped.txt'"):
        fetch(unchecked, tmp_path / "downloads")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_copy_is_replaced_once_the_new_one_verifies(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"an older version")
    assert fetch(source(server), tmp_path).read_bytes() == PAYLOAD


@pytest.mark.parametrize("name, corrupt, complaint", [
    ("OpenImages_images.zip", zip_corrupted_at(1000), "member 'a.jpg' is damaged: Bad CRC-32"),
    ("OpenImages_images.zip", zip_corrupted_at(35, 0xFF), "member 'a.jpg' is damaged: .*invalid block type"),
    ("CUBV2.tar", tar_with_a_member_longer_than_its_header(), "byte 1,024 is neither a member's header"),
], ids=["zip-crc", "zip-deflate", "tar-member-longer-than-its-header"])
def test_without_a_sum_a_corrupt_archive_is_deleted_and_fetched_again(server, tmp_path, name, corrupt, complaint):
    good = tarball({"a.jpg": PAYLOAD[:4096]}, gzip=False)
    server.behaviour.files[f"/{name}"] = corrupt
    with pytest.raises(DownloadError, match=f"every mirror failed:\n  .*/{name}: .*/{name}: {complaint}"):
        fetch(source(server, None, (f"/{name}",), name), tmp_path)
    assert list(tmp_path.iterdir()) == []  # not trusted: no sum recorded, nothing kept
    server.behaviour.files[f"/good/{name}"] = good
    assert fetch(source(server, None, (f"/{name}", f"/good/{name}"), name), tmp_path).read_bytes() == good
    assert (tmp_path / f"{name}.sha256").read_text().strip() == sha(good).removeprefix("sha256:")


def test_a_corrupt_archive_recorded_by_an_earlier_check_is_not_trusted(server, tmp_path):
    corrupt = zip_corrupted_at(1000)
    (tmp_path / "OpenImages_images.zip").write_bytes(corrupt)  # listed whole: the check before this one passed it
    (tmp_path / "OpenImages_images.zip.sha256").write_text(sha(corrupt).removeprefix("sha256:") + "\n")
    server.behaviour.files["/OpenImages_images.zip"] = corrupt
    with pytest.raises(DownloadError, match="every mirror failed:\n  .*/OpenImages_images.zip: .*Bad CRC-32"):
        fetch(source(server, None, ("/OpenImages_images.zip",), "OpenImages_images.zip"), tmp_path)
    assert server.behaviour.requests == [("/OpenImages_images.zip", None)]  # checked, refused, fetched again


@pytest.mark.parametrize("record", ["", "97eceeb1", "z" * 64, sha(ARCHIVE)[7:] + "00"], ids=["empty", "truncated",
                                                                                           "not-hex", "too-long"])
def test_a_sha256_record_that_is_not_one_is_discarded_and_the_file_checked_again(server, tmp_path, record):
    (tmp_path / "CUBV2.tar").write_bytes(ARCHIVE)
    (tmp_path / "CUBV2.tar.sha256").write_text(record)  # e.g. cut short by a crash while it was written
    server.behaviour.files["/CUBV2.tar"] = ARCHIVE
    assert fetch(source(server, None, ("/CUBV2.tar",), "CUBV2.tar"), tmp_path).read_bytes() == ARCHIVE
    assert (tmp_path / "CUBV2.tar.sha256").read_text() == sha(ARCHIVE).removeprefix("sha256:") + "\n"
    assert server.behaviour.requests == []  # the file passed its format check: nothing to download


def test_a_trickling_server_fails_within_the_rate_window_and_its_part_is_kept(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RATE_WINDOW", 1)  # 60 s, scaled down
    monkeypatch.setattr(download, "MIN_RATE", 100)
    server.behaviour.slow["/data.bin"] = 0.2  # 5 bytes/s: the whole file in 58 hours
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"every mirror failed:\n  http://.*/data\.bin: \d+ bytes in 1\.\d s "
                                           r"\(\d bytes/s\), below the minimum of 100 bytes/s over 1 s \(MIN_RATE\)$"):
        fetch(source(server), tmp_path)
    assert time.monotonic() - start < 3
    assert 0 < (tmp_path / "data.bin.part").stat().st_size < 20  # kept: the next run resumes it


@pytest.mark.parametrize("name, cap", [("CUBV2.tar", "MAX_BYTES"), ("cub_val_image_ids.txt", "MAX_TEXT_BYTES")])
def test_an_endless_body_is_cut_at_the_cap_and_deleted(server, tmp_path, monkeypatch, name, cap):
    monkeypatch.setattr(download, cap, 1 << 20)
    server.behaviour.endless.add(f"/{name}")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"/{name}: more than 1,048,576 bytes, the most a file of this kind"):
        fetch(source(server, None, (f"/{name}",), name), tmp_path)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_a_length_above_the_cap_is_refused_before_the_body_is_read(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MAX_BYTES", 1000)
    with pytest.raises(DownloadError, match=r"/data\.bin: announces 1,048,576 bytes, more than the 1,000 a file"):
        fetch(source(server), tmp_path)
    assert list(tmp_path.iterdir()) == []
