"""Downloaded archives: checking that one is whole, and unpacking it all or nothing, never outside
the target folder."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")  # the archives extract() unpacks


class ArchiveError(PipelineError, RuntimeError):
    """A corrupt or unsafe archive; the message names it."""


def _check_zip_member(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ArchiveError(f"{archive}: member {name!r} would be written outside the target folder")


def check(archive: Path, name: str | None = None) -> None:
    """Raise ArchiveError, calling the archive ``name`` (default: its path), unless it opens as
    :func:`extract` opens it and lists to its end, with at least one member."""
    name = name or str(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                members = z.namelist()
        else:
            members = _tar_members(archive, name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise ArchiveError(f"{name}: cannot list: {error}") from None
    if not members:
        raise ArchiveError(f"{name}: no members")


def _tar_members(archive: Path, name: str) -> list[tarfile.TarInfo]:
    """The members of a tar, plain or compressed, read to the end of its stream: one cut short fails,
    even between members, and so does a compressed one whose checksum or end is missing."""
    try:
        t = tarfile.open(archive)
    except tarfile.ReadError:
        raise ArchiveError(f"{name}: cannot open: not a whole zip or tar archive") from None
    with t:
        members = t.getmembers()
        end_block = t.offset + tarfile.BLOCKSIZE  # t.offset: where the last member ends
        while t.fileobj.read(1 << 20):
            pass
        if t.fileobj.tell() < end_block:
            raise ArchiveError(f"{name}: cut short: no end-of-archive block after its last member")
    return members


def extract(archive: Path, into: Path) -> None:
    """Unpack a .tar, .tar.gz/.tgz or .zip archive into ``into`` (created, or merged into if it
    exists). Members go to a temporary sibling folder first and move in only once all are out, so a
    corrupt archive leaves ``into`` as it was."""
    staging = into.with_name(f".{into.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    _check_zip_member(archive, name)
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                t.extractall(staging, filter="data")  # refuses absolute paths, '..' and links out
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"{archive}: cannot unpack: {error}") from None
    except ArchiveError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    into.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        target = into / item.name
        if target.is_dir() and item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
