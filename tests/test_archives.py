"""Unpacking archives we did not write: hand-built hostile tars and zips (the CVE-2025-4517 exploit,
links, odd names, duplicates, bombs) are refused before anything is written, naming the archive
and the member, and nothing outside the target folder changes."""

import io
import os
import re
import tarfile
import warnings
import zipfile

import pytest

from pipeline.data import archives
from pipeline.data.archives import ArchiveError, extract
from pipeline.data.download import DownloadError, fetch
from pipeline.settings.config import Source
from tests.helpers import tarball
from tests.http_server import FileServer

STEPS = "abcdefghijklmnop"  # the exploit's chain of symlinks, one a level
Member = tuple[tarfile.TarInfo, bytes]  # a tar member's header and data


def member(name: str, type: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = type, link, len(data)
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    return info, data


def tar_of(members: list[Member]) -> bytes:
    """A tar of these (header, data) members, in memory, with no check of what they are."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def zip_of(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    """A zip of these entries, duplicates included, in memory."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as z:
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning: here on purpose
        for info, data in entries:
            z.writestr(info, data)
    return out.getvalue()


def realpath_limit_exploit(unpack_into: str, up: int, target: str) -> bytes:
    """The tar of CVE-2025-4517 as its advisory and CPython's test (test_realpath_limit_attack)
    build it: folders whose names are sized, for a folder named about as long as ``unpack_into``,
    so that the 16 symlinks a..p, once resolved, make a path past PATH_MAX; then a symlink whose
    target os.path.realpath never resolves (so the ``data`` filter sees it inside), which really
    points back to the unpacking folder; "escape", a symlink through it ``up`` folders up and down
    to ``target``; a hard link to escape/flag; and a file written over that hard link."""
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - len(unpack_into) - 1) // (len(STEPS) + 1))
    members, path = [], ""
    for step in STEPS:
        members += [member(os.path.join(path, component), tarfile.DIRTYPE),
                    member(os.path.join(path, step), tarfile.SYMTYPE, component)]
        path = os.path.join(path, component)
    linkpath = os.path.join(*STEPS, "l" * 254)
    members += [member(linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(STEPS))),
                member("escape", tarfile.SYMTYPE, os.path.join(linkpath, *[".."] * up, target)),
                member("flaglink", tarfile.LNKTYPE, "escape/flag"),
                member("flaglink", data=b"overwritten\n")]
    return tar_of(members)


@pytest.fixture
def outside(tmp_path):
    """A user's file outside the project, and the project's raw-data folder: (file, folder)."""
    flag = tmp_path / "outside" / "flag"
    flag.parent.mkdir()
    flag.write_text("mine\n")
    return flag, tmp_path / "project" / "data" / "raw"


def raised(function, *args) -> Exception | None:
    try:
        function(*args)
    except Exception as error:  # returned, for the test to look at what happened first
        return error
    return None


def test_the_cve_2025_4517_tar_is_refused_and_the_file_outside_is_untouched(tmp_path, outside):
    flag, raw = outside
    archive = tmp_path / "CUBV2.tar"
    archive.write_bytes(realpath_limit_exploit(str(raw / "cubv2"), 4, "outside"))  # tmp_path is 4 up from
    error = raised(extract, archive, raw / "cubv2")  # the folder beside raw/cubv2 that it unpacks into
    assert flag.read_text() == "mine\n"  # Python 3.11.7's data filter alone lets it write "overwritten"
    assert isinstance(error, ArchiveError)
    assert str(error).startswith(f"{archive}: member 'a' is a symbolic link to 'ddd")
    assert not raw.exists()  # nothing written, not even a folder


def test_the_cve_2025_4517_tar_without_a_published_sum_is_refused_at_download(tmp_path, outside):
    flag, raw = outside
    with FileServer() as server:
        server.behaviour.files["/CUBV2.tar"] = realpath_limit_exploit(str(raw / "cubv2"), 4, "outside")
        downloads = tmp_path / "project" / "data" / "downloads"
        error = raised(fetch, Source(urls=[server.url("/CUBV2.tar")], checksum=None, filename="CUBV2.tar"), downloads)
    assert isinstance(error, DownloadError)
    assert f"{downloads / 'CUBV2.tar'}: member 'a' is a symbolic link" in str(error)
    assert list(downloads.iterdir()) == []  # no sum recorded: the next run fetches it again
    assert flag.read_text() == "mine\n"


@pytest.mark.parametrize("links", [
    [member("a.jpg", data=b"jpeg"), member("b.jpg", tarfile.SYMTYPE, "a.jpg")],
    [member("a.jpg", data=b"jpeg"), member("b.jpg", tarfile.LNKTYPE, "a.jpg")],
    [member("pipe", tarfile.FIFOTYPE), member("a.jpg", data=b"jpeg")],
], ids=["symlink-inside", "hardlink-inside", "fifo"])
def test_links_and_special_files_are_refused_even_inside_before_anything_is_written(tmp_path, links):
    archive = tmp_path / "images.tar"
    archive.write_bytes(tar_of(links))
    with pytest.raises(ArchiveError, match=rf"^{archive}: member '(b.jpg|pipe)' is a (symbolic link|hard link|FIFO)"):
        extract(archive, tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tar"]


def test_a_zip_symlink_entry_is_refused(tmp_path):
    link = zipfile.ZipInfo("b.jpg")
    link.external_attr = 0o120777 << 16  # S_IFLNK: unzip makes it a symlink to its content
    archive = tmp_path / "images.zip"
    archive.write_bytes(zip_of([("a.jpg", b"jpeg"), (link, b"/etc/passwd")]))
    with pytest.raises(ArchiveError, match=rf"^{archive}: member 'b.jpg' is a symbolic link"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("name", ["C:/Windows/a.jpg", "..\\..\\a.jpg", "images\\a.jpg"])
def test_zip_names_with_a_drive_or_a_backslash_are_refused(tmp_path, name):
    archive = tmp_path / "images.zip"
    archive.write_bytes(zip_of([("ok.jpg", b"jpeg"), (name, b"jpeg")]))
    with pytest.raises(ArchiveError, match=rf"^{archive}: member {re.escape(repr(name))} (would be written outside|"
                                           rf"has a NUL or a backslash)"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_tar_name_with_a_nul_is_refused(tmp_path):
    archive = tmp_path / "images.tar"
    nul, _ = member("a.jpg", data=b"jpeg")
    nul.pax_headers = {"path": "a.jpg\0/../../x"}  # a pax header keeps a NUL; a ustar name ends at one
    archive.write_bytes(tar_of([(nul, b"jpeg")]))
    with pytest.raises(ArchiveError, match=rf"^{archive}: member 'a.jpg\\x00/../../x' has a NUL"):
        extract(archive, tmp_path / "raw")


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_name_that_comes_twice_is_refused_not_overwritten(tmp_path, kind):
    def write(files):
        archive.write_bytes(tar_of([member(n, tarfile.DIRTYPE if n.endswith("/") else tarfile.REGTYPE, data=d)
                                    for n, d in files]) if kind == "tar" else zip_of(files))

    archive = tmp_path / f"images.{kind}"
    once = [("./", b""), ("images/", b""), ("images/a.jpg", b"first"), ("./images/sub/b.jpg", b"other")]
    write(once + [("./images//a.jpg", b"second")])
    with pytest.raises(ArchiveError, match=rf"^{archive}: member './images//a.jpg' comes twice"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    write(once)  # each name once: folders and "./" are fine
    extract(archive, tmp_path / "raw")
    assert sorted(str(p.relative_to(tmp_path / "raw")) for p in (tmp_path / "raw").rglob("*.jpg")) == [
        "images/a.jpg", "images/sub/b.jpg"]


def test_a_tar_member_longer_than_its_header_says_is_refused_not_cut(tmp_path):
    a, _ = member("a.jpg", data=bytes(512))
    b, _ = member("b.jpg", data=bytes(512))
    archive = tmp_path / "images.tar"
    archive.write_bytes(a.tobuf() + b"\xaa" * 1024 + b.tobuf() + b"\xbb" * 512 + bytes(1024))  # a: 1024, not 512
    with pytest.raises(ArchiveError, match=rf"^{archive}: byte 1,024 is neither a member's header nor the end"):
        extract(archive, tmp_path / "raw")  # today: a.jpg alone, and b.jpg silently lost
    assert not (tmp_path / "raw").exists()


def test_a_zip_bomb_is_refused_before_anything_is_written_with_the_default_limits(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z, z.open("a.bmp", "w") as f:
        for _ in range(100):
            f.write(bytes(1 << 20))  # 100 MiB of zeros: deflated to ~100 KB, 1000 times smaller
    archive = tmp_path / "images.zip"
    archive.write_bytes(out.getvalue())
    with pytest.raises(ArchiveError, match=rf"^{archive}: member 'a.bmp' brings the size the headers announce to "
                                           rf"104,857,600 bytes, over this archive's limit of 67,108,864 "
                                           rf"\(the larger of 100x its [\d,]+ bytes and RATIO_FREE_BYTES"):
        extract(archive, tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.zip"]


def test_a_gzip_bomb_tar_is_refused_at_the_header_that_passes_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "RATIO_FREE_BYTES", 1 << 20)
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(tarball({"a.jpg": bytes(1 << 10), "b.bmp": bytes(20 << 20), "c.jpg": b"jpeg"}))
    with pytest.raises(ArchiveError, match=rf"^{archive}: member 'b.bmp' brings .* to 20,972,544 bytes, over this "
                                           rf"archive's limit of {100 * archive.stat().st_size:,} \(the larger of 100x"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_the_member_count_and_total_size_are_capped(tmp_path, monkeypatch):
    archive = tmp_path / "images.tar"
    archive.write_bytes(tarball({f"{n}.jpg": bytes(1000) for n in range(4)}, gzip=False))
    monkeypatch.setattr(archives, "MAX_MEMBERS", 3)
    with pytest.raises(ArchiveError, match=rf"^{archive}: member '3.jpg' is one more than the 3 members .*MAX_MEMBERS"):
        extract(archive, tmp_path / "raw")
    monkeypatch.setattr(archives, "MAX_MEMBERS", 4)
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 3500)
    with pytest.raises(ArchiveError, match=rf"^{archive}: member '3.jpg' brings .* 4,000 bytes, over this archive's "
                                           rf"limit of 3,500 "):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("corrupt, complaint", [
    (lambda z: z[:100] + bytes([z[100] ^ 1]) + z[101:], "member 'a.jpg' is damaged: Bad CRC-32"),
    (lambda z: z[:35] + b"\xff" + z[36:], "member 'a.jpg' is damaged: .*invalid block type"),
], ids=["crc", "deflate"])
def test_check_decompresses_every_zip_member(tmp_path, corrupt, complaint):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.jpg", os.urandom(1000))  # local header: 30 bytes + "a.jpg"; its data from byte 35
    archive = tmp_path / "images.zip"
    archive.write_bytes(corrupt(out.getvalue()))
    with pytest.raises(ArchiveError, match=rf"^{archive}: {complaint}"):
        archives.check(archive)
