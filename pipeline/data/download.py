"""Resumable, verified, atomic downloads.

A file is fetched to ``<name>.part`` (resuming with an HTTP Range request after a cut connection,
or on the next run), verified against its checksum, and only then renamed to ``<name>``: a file
under its final name is always complete and verified. A checksum mismatch deletes the partial file
and raises :class:`ChecksumError` naming the file and both sums. Where no checksum is published the
sum of the first complete download is recorded in ``<name>.sha256`` and checked from then on.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.config import Source
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read
ATTEMPTS = 5  # connection attempts per mirror, each resuming where the last stopped
TIMEOUT = 60  # seconds without data before a connection counts as cut


class DownloadError(PipelineError, RuntimeError):
    """Every mirror failed; the message names the file and each mirror's failure."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the expected ones."""


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _split_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    return algorithm, value


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _expected(source: Source, dest: Path) -> str | None:
    """The params' checksum, else the one recorded at the first download, else None."""
    if source.checksum is not None:
        return source.checksum
    record = _record_path(dest)
    return f"sha256:{record.read_text().strip()}" if record.is_file() else None


def _verify(path: Path, expected: str | None, name: str) -> None:
    if expected is None:
        return
    algorithm, value = _split_checksum(expected)
    actual = file_digest(path, algorithm)
    if actual != value:
        raise ChecksumError(f"{name}: checksum mismatch: expected {algorithm}:{value}, got {algorithm}:{actual}")


def _transfer(url: str, part: Path) -> None:
    """Append url's bytes to part from its current size; returns when the server's length is reached."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after offset: the partial file is whole
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        expected_end = offset + int(length) if length is not None else None
        with part.open("ab" if offset else "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
        if expected_end is not None and part.stat().st_size < expected_end:
            raise http.client.IncompleteRead(b"", expected_end - part.stat().st_size)


def _from_mirror(url: str, part: Path) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(url, part)
            return
        except urllib.error.HTTPError:
            raise  # the server answered with an error: another attempt will not change it
        except (OSError, http.client.HTTPException) as error:  # cut connection, timeout, reset
            if attempt == ATTEMPTS:
                raise
            got = part.stat().st_size if part.exists() else 0
            log.warning("%s: %s after %d bytes; resuming (attempt %d of %d)", url, error, got, attempt + 1, ATTEMPTS)
            time.sleep(min(2 ** attempt, 30) * 0.1)


def fetch(source: Source, directory: Path) -> Path:
    """The verified file ``directory / source.filename``, downloaded unless already there."""
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / source.filename
    expected = _expected(source, dest)
    if dest.is_file():
        try:
            _verify(dest, expected, str(dest))
            if expected is None:
                _record_path(dest).write_text(file_digest(dest, "sha256") + "\n")
            return dest
        except ChecksumError as error:  # a stale copy: replaced below, only once a verified one exists
            log.warning("%s; downloading it again", error)
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in source.urls:
        try:
            _from_mirror(url, part)
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{url}: {error}")
            continue
        try:
            _verify(part, expected, str(dest))
        except ChecksumError:
            part.unlink()
            raise
        if expected is None:
            digest = file_digest(part, "sha256")
            _record_path(dest).write_text(digest + "\n")
            log.warning("%s: no checksum in params.yaml; recorded sha256:%s (put it in params.yaml to pin it)",
                        dest, digest)
        os.replace(part, dest)
        return dest
    raise DownloadError(f"{dest}: every mirror failed:\n  " + "\n  ".join(failures))
