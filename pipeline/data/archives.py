"""Downloaded archives: checking that one is whole, and unpacking it all or nothing, never outside
the target folder.

Every member is checked before anything is written, by this module rather than by ``tarfile`` or
``zipfile`` alone:

- its name is a relative path that stays inside: no absolute path, drive, ``..``, NUL or backslash;
- it is a regular file or a folder. Links, devices and FIFOs are refused: none of the protocol's
  archives (CUB_200_2011.tgz, CUBV2.tar, imagenetv2-threshold0.7.tar.gz, the OpenImages zips) holds
  one, and links are how a tar escapes ``tarfile``'s ``data`` filter on the Pythons we accept
  (CVE-2025-4517, CVE-2025-4138, CVE-2024-12718: a chain of symlinks whose resolved path passes
  PATH_MAX, where ``os.path.realpath`` stops resolving; fixed only in 3.11.13, 3.12.11, 3.13.4);
- no name comes twice (the last copy would win silently);
- the number of members and the sizes their headers announce stay within :data:`MAX_MEMBERS`,
  :data:`MAX_UNPACKED_BYTES` and :data:`MAX_RATIO` times the archive's own size.

Tars are then extracted with the ``data`` filter on top (which also drops setuid bits and write
permission for group and others; zip members get default permissions), and each member is checked
again as it is written.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from pipeline.errors import PipelineError

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")  # the archives extract() unpacks

# Limits, sized on the largest WSOL dataset, ILSVRC's train set: 1.28 M images, 138 GB (CUB: 11,788
# images, 1.1 GB; OpenImages30k: ~37 k images and as many masks).
MAX_MEMBERS = 2_000_000
MAX_UNPACKED_BYTES = 1 << 38  # 256 GiB: what the members' headers may add up to
MAX_RATIO = 100  # unpacked / archive size: ~1 for JPEG and PNG, ~10 for text; zip bombs reach 1000+
RATIO_FREE_BYTES = 1 << 26  # 64 MiB: an archive may always unpack to this much, whatever its ratio

CHUNK = 1 << 20  # bytes per read
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError,
                NotImplementedError)  # NotImplementedError: a zip compression method zipfile lacks
_COMPRESSIONS: dict[bytes, Callable[..., Any]] = {
    b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}  # magic bytes -> opener
_DRIVE = re.compile(r"[A-Za-z]:")
_TAR_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "folder",
              tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
              tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO", tarfile.GNUTYPE_SPARSE: "a sparse file"}


class ArchiveError(PipelineError, RuntimeError):
    """A corrupt or unsafe archive; the message names it and, where one is at fault, the member."""


def _short(text: str, width: int = 80) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


class _Inventory:
    """The members of one archive, admitted one at a time: each is refused, naming the archive and
    the member, unless its name, kind and size keep the rules of this module's docstring."""

    def __init__(self, name: str, archive_bytes: int):
        self.name = name
        self.paths: set[PurePosixPath] = set()
        self.bytes = 0
        self.limit = min(MAX_UNPACKED_BYTES, max(MAX_RATIO * archive_bytes, RATIO_FREE_BYTES))
        self.archive_bytes = archive_bytes

    def _refuse(self, member: str, why: str) -> ArchiveError:
        return ArchiveError(f"{self.name}: member {_short(member)} {why}: refused")

    def admit(self, member: str, kind: str, size: int, link: str = "") -> PurePosixPath:
        """The member's path relative to the target folder; kind is "file", "folder" or what else it is
        ("a symbolic link"), link its target if any, size the bytes its header announces."""
        if kind not in ("file", "folder"):
            raise self._refuse(member, f"is {kind}{f' to {_short(link)}' if link else ''}: only plain files and "
                                       f"folders are unpacked")
        if "\0" in member or "\\" in member:
            raise self._refuse(member, "has a NUL or a backslash in its name")
        path = PurePosixPath(member)
        if path.is_absolute() or _DRIVE.match(member) or ".." in path.parts:
            raise self._refuse(member, "would be written outside the target folder")
        if not path.parts:
            if kind == "folder":
                return path  # "./": the target folder itself
            raise self._refuse(member, "names no file")
        if path in self.paths:
            raise self._refuse(member, "comes twice (an earlier member has the same path)")
        self.paths.add(path)
        if len(self.paths) > MAX_MEMBERS:
            raise self._refuse(member, f"is one more than the {MAX_MEMBERS:,} members an archive may have "
                                       f"(MAX_MEMBERS)")
        self.bytes += size
        if self.bytes > self.limit:
            raise self._refuse(member, f"brings the size the headers announce to {self.bytes:,} bytes, over this "
                                       f"archive's limit of {self.limit:,} (the larger of {MAX_RATIO}x its "
                                       f"{self.archive_bytes:,} bytes and RATIO_FREE_BYTES, at most "
                                       f"MAX_UNPACKED_BYTES)")
        return path

    def admit_tar(self, info: tarfile.TarInfo) -> tarfile.TarInfo:
        kind = _TAR_KINDS.get(info.type, f"of unknown type {info.type!r}")
        self.admit(info.name, kind, info.size if kind == "file" else 0, info.linkname)
        return info

    def admit_zip(self, info: zipfile.ZipInfo) -> PurePosixPath:
        mode = info.external_attr >> 16  # the Unix mode, where the zip was made on Unix
        if info.is_dir():
            kind = "folder"
        elif stat.S_ISLNK(mode):
            kind = "a symbolic link"
        elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
            kind = "an encrypted file" if info.flag_bits & 0x1 else "file"
        else:
            kind = f"a special file (mode {mode:#o})"
        return self.admit(info.filename, kind, info.file_size)

    def check_not_empty(self) -> None:
        if not self.paths:
            raise ArchiveError(f"{self.name}: no members")


class _LastRead:
    """A read-only stream that keeps its last read. tarfile stops listing, silently, at the first
    block that is not a header: this is how we see which block that was."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.last = stream, b""

    def read(self, size: int = -1) -> bytes:
        self.last = self.stream.read(size)
        return self.last

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


@contextlib.contextmanager
def _open_tar(archive: Path, name: str) -> Iterator[tuple[tarfile.TarFile, _LastRead]]:
    """The tar (plain, gzip, bzip2 or xz) read through a :class:`_LastRead` of its uncompressed bytes."""
    with archive.open("rb") as f:
        head = f.read(6)
    opener = next((o for magic, o in _COMPRESSIONS.items() if head.startswith(magic)), Path.open)
    with opener(archive, "rb") as stream:
        recorded = _LastRead(stream)
        try:
            t = tarfile.open(fileobj=recorded, mode="r:")  # type: ignore[call-overload]  # a file-like reader
        except tarfile.ReadError as error:
            raise ArchiveError(f"{name}: cannot open: not a whole zip or tar archive ({error})") from None
        with t:
            yield t, recorded


def _check_tar_end(name: str, t: tarfile.TarFile, recorded: _LastRead) -> None:
    """Raise unless the block after the last member is the end-of-archive (zeros) and only zeros
    follow it to the end of the (decompressed, so checksum-verified) stream. A member longer than
    its header says leaves its surplus where the next header should be: tarfile stops there."""
    if len(recorded.last) < tarfile.BLOCKSIZE:
        raise ArchiveError(f"{name}: cut short: no end-of-archive block after its last member")
    if recorded.last.strip(b"\0"):
        raise ArchiveError(f"{name}: byte {t.offset:,} is neither a member's header nor the end of the archive "
                           f"(a member longer than its header says, or a damaged header): the members after it "
                           f"would be lost")
    while block := recorded.read(CHUNK):
        if block.strip(b"\0"):
            raise ArchiveError(f"{name}: data after its end-of-archive block")


def _read_through(name: str, member: str, size: int, open_member: Callable[[], IO[bytes] | None]) -> None:
    """Decompress one member (a file) to its end (which checks a zip member's CRC), counting its bytes."""
    got = 0
    try:
        opened = open_member()
        assert opened is not None  # a file member
        with opened as stream:
            while block := stream.read(CHUNK):
                got += len(block)
    except _READ_ERRORS as error:
        raise ArchiveError(f"{name}: member {_short(member)} is damaged: {error}") from None
    if got != size:
        raise ArchiveError(f"{name}: member {_short(member)} has {got:,} bytes, its header says {size:,}")


def _scan(archive: Path, name: str, read: bool) -> None:
    """Admit every member (see :class:`_Inventory`) and, for a tar, check its end; with read, also
    decompress every member to its end. Nothing is written."""
    inventory = _Inventory(name, archive.stat().st_size)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                inventory.admit_zip(info)
            if read:
                for info in z.infolist():
                    if not info.is_dir():
                        _read_through(name, info.filename, info.file_size, lambda: z.open(info))
    else:
        with _open_tar(archive, name) as (t, recorded):
            for member in t:
                inventory.admit_tar(member)
                if read and member.isfile():
                    _read_through(name, member.name, member.size, lambda: t.extractfile(member))
            _check_tar_end(name, t, recorded)
    inventory.check_not_empty()


def check(archive: Path, name: str | None = None) -> None:
    """Raise ArchiveError, calling the archive ``name`` (default: its path), unless :func:`extract`
    would accept every member and every member decompresses whole: a zip's CRCs match, a tar's
    compressed stream is read to its verified end and its last member is followed by its
    end-of-archive block. What a format check must pass before a download's sum is recorded."""
    name = name or str(archive)
    try:
        _scan(archive, name, read=True)
    except _READ_ERRORS as error:
        raise ArchiveError(f"{name}: cannot read: {error}") from None


def _extract_zip(archive: Path, staging: Path) -> None:
    inventory = _Inventory(str(archive), archive.stat().st_size)
    with zipfile.ZipFile(archive) as z:
        admitted = [(info, inventory.admit_zip(info)) for info in z.infolist()]
        for info, path in admitted:
            target = staging.joinpath(*path.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as source, target.open("xb") as out:  # "x": never through an existing file
                written = 0
                while block := source.read(CHUNK):
                    written += out.write(block)
            if written != info.file_size:
                raise ArchiveError(f"{archive}: member {_short(info.filename)} has {written:,} bytes, its header "
                                   f"says {info.file_size:,}")


def _extract_tar(archive: Path, staging: Path) -> None:
    inventory = _Inventory(str(archive), archive.stat().st_size)
    with _open_tar(archive, str(archive)) as (t, _):
        t.extractall(staging, members=(inventory.admit_tar(info) for info in t), filter="data")


def extract(archive: Path, into: Path) -> None:
    """Unpack a .tar, .tar.gz/.tgz or .zip archive into ``into`` (created, or merged into if it
    exists), once every member passes the checks of this module's docstring. Members go to a
    temporary sibling folder first and move in only once all are out, so a corrupt or refused
    archive leaves ``into`` as it was."""
    try:
        _scan(archive, str(archive), read=False)
    except _READ_ERRORS as error:
        raise ArchiveError(f"{archive}: cannot read: {error}") from None
    staging = into.with_name(f".{into.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (_extract_zip if zipfile.is_zipfile(archive) else _extract_tar)(archive, staging)
    except _READ_ERRORS as error:
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
