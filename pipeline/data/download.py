"""Resumable, verified, atomic downloads over http(s).

A file is fetched to ``<name>.part`` and renamed to ``<name>`` only once verified, so a file under
its final name is always complete. Verified means that it matches its checksum in params.yaml;
or, where params.yaml has none, that it passes a format check (every member of an archive
decompresses whole and passes :mod:`pipeline.data.archives`' rules; a text file is UTF-8 and not an
HTML page) and matches the sha256 recorded in ``<name>.sha256`` at its first download. A first
download must also have all the bytes its server announced before its sum is recorded
(atomically); a record that is not 64 hex digits is discarded and the file checked again. A file
of another kind needs its checksum in params.yaml.

Every transfer is bounded. In size: a file may not pass the Content-Length its server announced,
nor, announced or not, MAX_TEXT_BYTES (.txt) or MAX_BYTES (any other file). In time: a connection
silent for TIMEOUT seconds counts as cut (and is resumed, ATTEMPTS times in all), and a body
averaging less than MIN_RATE bytes/s over RATE_WINDOW seconds fails, so a server that trickles its
body fails within RATE_WINDOW + TIMEOUT seconds (its ``.part`` is kept, for the next run to resume).

A cut transfer is resumed, after a dropped connection or on the next run, only where the server
confirms that the ``.part`` holds the start of the same entity: ``<name>.part.json`` keeps the URL,
validator (ETag, else Last-Modified) and length of the response that started it, and the resume
sends ``Range`` with ``If-Range``. Otherwise (no record, a 200, a 206 of another entity, a 416)
the file starts over.

Mirrors are tried in order. A mirror whose file fails (HTTP error, dropped connection, too slow,
too large, wrong sum, wrong format) is noted and the next one tried; when all fail,
:class:`DownloadError` names the file and each mirror's failure (:class:`ChecksumError` if one
served wrong bytes). Only http(s) URLs are fetched, redirects included, and only to plain file
names.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.settings.config import URL_SCHEMES, Source, plain_filename
from pipeline.data import archives
from pipeline.errors import PipelineError
from pipeline.dag.paths import write_text_atomically

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read
ATTEMPTS = 5  # connection attempts per mirror, each resuming where the last stopped
TIMEOUT = 60  # seconds without data before a connection counts as cut
MIN_RATE = 16 << 10  # bytes/s: 16 KiB/s brings CUB's 1.1 GB in 19 h; slower is a stuck or hostile server
RATE_WINDOW = 60  # seconds over which the rate is averaged (a short stall does not count)
MAX_BYTES = 1 << 38  # 256 GiB: about twice ILSVRC's train tar (138 GB), the largest WSOL download
MAX_TEXT_BYTES = 1 << 28  # 256 MiB: wsolevaluation's largest metadata file (ILSVRC train) is about 50 MB
CHECKED = (*archives.SUFFIXES, ".txt")  # the kinds of file with a format check
CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+)")


class DownloadError(PipelineError, RuntimeError):
    """A file could not be fetched; the message names it and each mirror's failure."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the expected ones."""


class TooSlowError(DownloadError):
    """A server sent less than MIN_RATE bytes/s over RATE_WINDOW seconds."""


class FormatError(DownloadError):
    """A file with no sum to match is not what its name says (an HTML page, an archive cut short)."""


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib's own handler follows ftp:// ones too)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in URL_SCHEMES:
            raise urllib.error.HTTPError(req.full_url, code, f"refused a redirect to {newurl} (only "
                                         f"{' and '.join(URL_SCHEMES)} URLs are fetched)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_open_url = urllib.request.build_opener(_HttpRedirectsOnly).open


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of the file at path."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _recorded(dest: Path) -> str | None:
    """The sum recorded at dest's first download, ``"sha256:<hex>"``, or None (a record that is not
    64 hex digits is deleted: dest is then checked as a first download is)."""
    record = _beside(dest, ".sha256")
    if not record.is_file():
        return None
    digest = record.read_bytes().strip()
    if re.fullmatch(rb"[0-9a-f]{64}", digest):
        return f"sha256:{digest.decode()}"
    log.warning("%s: not a sha256 (64 hex digits): %r; deleted, %s is checked again", record, digest[:80], dest)
    record.unlink()
    return None


def _cap(dest: Path) -> int:
    """The most bytes dest may have."""
    return MAX_TEXT_BYTES if dest.name.endswith(".txt") else MAX_BYTES


def _check_format(path: Path, dest: Path) -> None:
    """Raise FormatError unless path holds what dest's name says: an archive that lists to its end,
    or UTF-8 text; neither may be an HTML page (a server's error or sign-in page)."""
    with path.open("rb") as f:
        if f.read(1024).lstrip().lower().startswith((b"<!doctype", b"<html")):
            raise FormatError(f"{dest}: looks like an HTML page (an error or sign-in page?), not the file")
    if dest.name.endswith(archives.SUFFIXES):
        try:
            archives.check(path, str(dest))
        except archives.ArchiveError as error:
            raise FormatError(str(error)) from None
    else:
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise FormatError(f"{dest}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _match(path: Path, expected: str, dest: Path, whence: str) -> None:
    """Raise ChecksumError unless path has the checksum ``expected`` ("<algorithm>:<hex>"), from whence."""
    algorithm, _, value = expected.partition(":")
    actual = file_digest(path, algorithm)
    if actual != value:
        raise ChecksumError(f"{dest}: checksum mismatch: expected {expected} ({whence}), got {algorithm}:{actual}")


def _accept(path: Path, source: Source, dest: Path) -> None:
    """Raise ChecksumError or FormatError unless path (dest or its .part) is a good copy of dest: it
    has the params' checksum; or, with none there, it passes its format check and has the sha256
    recorded at the first download, recorded now if there is none. (A recorded file is checked
    too: a record does not vouch for a file that an earlier, weaker check let through.)"""
    if source.checksum is not None:
        _match(path, source.checksum, dest, "params.yaml")
        return
    _check_format(path, dest)
    recorded = _recorded(dest)
    if recorded is not None:
        _match(path, recorded, dest, f"recorded in {dest.name}.sha256 at its first download")
        return
    digest = file_digest(path, "sha256")
    write_text_atomically(_beside(dest, ".sha256"), digest + "\n")
    log.warning("%s: no checksum in params.yaml; recorded sha256:%s (put it in params.yaml to pin it)",
                dest, digest)


def _validator(response) -> str | None:
    """What If-Range can name the response's entity by: its strong ETag, else its Last-Modified."""
    etag = response.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")


def _origin(part: Path) -> dict:
    """The record of the response that started part ({} if none)."""
    try:
        return json.loads(_beside(part, ".json").read_text())
    except (OSError, ValueError):
        return {}


def _open(url: str, part: Path) -> tuple[http.client.HTTPResponse, int]:
    """url's response and the offset in part where its body goes: part's size when the server
    confirms that part holds the start of the same entity, else 0 (part starts over)."""
    offset = part.stat().st_size if part.exists() else 0
    origin = _origin(part)
    if offset and origin.get("url") == url and origin.get("validator") and origin.get("length"):
        headers = {"Range": f"bytes={offset}-", "If-Range": origin["validator"]}
        try:
            response = _open_url(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            if error.code != 416:  # 416: part is not a prefix of the entity
                raise
            error.close()
        else:
            if response.status == 200:  # the entity changed, and here it is whole
                return response, 0
            match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if (match and int(match[1]) == offset and int(match[2]) == origin["length"]
                    and _validator(response) == origin["validator"]):
                return response, offset
            response.close()
    if offset:
        log.warning("%s: %s is not known to be the start of it; starting over", url, part)
    return _open_url(url, timeout=TIMEOUT), 0


def _start(url: str, part: Path, response) -> dict:
    """Record beside part the response that starts it: its URL, validator and length (None if the
    server announced none)."""
    length = response.headers.get("Content-Length")
    origin = {"url": url, "validator": _validator(response), "length": int(length) if length is not None else None}
    _beside(part, ".json").write_text(json.dumps(origin))
    return origin


class _Pace:
    """Counts a transfer's bytes; raises TooSlowError when a RATE_WINDOW ends with fewer than
    MIN_RATE bytes/s since it began. (Messages of the transfer's errors leave out the URL: fetch
    names it.)"""

    def __init__(self):
        self.start, self.bytes = time.monotonic(), 0

    def count(self, size: int) -> None:
        self.bytes += size
        elapsed = time.monotonic() - self.start
        if elapsed < RATE_WINDOW:
            return
        if self.bytes < MIN_RATE * elapsed:
            raise TooSlowError(f"{self.bytes:,} bytes in {elapsed:.1f} s ({self.bytes / elapsed:,.0f} "
                               f"bytes/s), below the minimum of {MIN_RATE:,} bytes/s over {RATE_WINDOW} s (MIN_RATE)")
        self.start, self.bytes = time.monotonic(), 0


def _receive(response, f, have: int, cap: int) -> None:
    """Append response's body to f, which holds ``have`` bytes, as it comes (read1: a trickle is
    counted byte by byte); raise DownloadError before f passes cap bytes, TooSlowError (see _Pace)."""
    pace = _Pace()
    while block := response.read1(CHUNK):
        have += len(block)
        if have > cap:
            raise DownloadError(f"more than {cap:,} bytes, the most a file of this kind may have "
                                f"(MAX_BYTES, MAX_TEXT_BYTES for .txt): refused")
        f.write(block)
        pace.count(len(block))


def _transfer(url: str, part: Path, cap: int) -> None:
    """Bring part to the whole of url's entity, of at most cap bytes; raise IncompleteRead if it
    ends short of the length the server announced."""
    response, offset = _open(url, part)
    with response:
        length = (_origin(part) if offset else _start(url, part, response))["length"]
        if length is not None and length > cap:
            raise DownloadError(f"announces {length:,} bytes, more than the {cap:,} a file of this kind may "
                                f"have (MAX_BYTES, MAX_TEXT_BYTES for .txt): refused")
        with part.open("ab" if offset else "wb") as f:
            _receive(response, f, offset, cap)
    if length is not None and part.stat().st_size < length:
        raise http.client.IncompleteRead(b"", length - part.stat().st_size)


def _from_mirror(url: str, part: Path, cap: int) -> None:
    """Fetch url into part, resuming after a dropped connection up to ATTEMPTS times in all."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(url, part, cap)
            return
        except urllib.error.HTTPError:
            raise  # the server answered with an error: another attempt will not change it
        except (OSError, http.client.HTTPException) as error:  # cut connection, timeout, reset
            if attempt == ATTEMPTS:
                raise
            got = part.stat().st_size if part.exists() else 0
            log.warning("%s: %s after %d bytes; resuming (attempt %d of %d)", url, error, got, attempt + 1, ATTEMPTS)
            time.sleep(min(2 ** attempt, 30) * 0.1)


def _refuse_unsafe(source: Source, directory: Path) -> None:
    """Raise DownloadError for a URL other than http(s) or a file name other than a plain one."""
    if not plain_filename(source.filename):
        raise DownloadError(f"{directory}: refused the file name {source.filename!r}: it must be a plain "
                            f"name (no folder, no '..', no leading dot)")
    for url in source.urls:
        if urllib.parse.urlsplit(url).scheme.lower() not in URL_SCHEMES:
            raise DownloadError(f"{directory / source.filename}: refused {url}: only "
                                f"{' and '.join(URL_SCHEMES)} URLs are fetched")


def fetch(source: Source, directory: Path) -> Path:
    """The verified file ``directory / source.filename``, downloaded unless already there."""
    _refuse_unsafe(source, directory)
    dest = directory / source.filename
    if source.checksum is None and not dest.name.endswith(CHECKED):
        raise DownloadError(f"{dest}: no checksum in params.yaml, and no format check for this kind of "
                            f"file (only {', '.join(CHECKED)}): put its checksum in params.yaml")
    directory.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        try:
            _accept(dest, source, dest)
            return dest
        except DownloadError as error:  # a stale or bad copy: replaced below, only by a verified one
            log.warning("%s; downloading it again", error)
    part = _beside(dest, ".part")
    failures, wrong_bytes = [], False
    for url in source.urls:
        try:
            _from_mirror(url, part, _cap(dest))
            _accept(part, source, dest)
        except (OSError, http.client.HTTPException, TooSlowError) as error:  # part stays, to be resumed
            failures.append(f"{url}: {error}")
        except DownloadError as error:  # wrong bytes: another mirror may have the right ones
            part.unlink(missing_ok=True)
            _beside(part, ".json").unlink(missing_ok=True)
            failures.append(f"{url}: {error}")
            wrong_bytes = wrong_bytes or isinstance(error, ChecksumError)
        else:
            os.replace(part, dest)
            _beside(part, ".json").unlink(missing_ok=True)
            return dest
    error_class = ChecksumError if wrong_bytes else DownloadError
    raise error_class(f"{dest}: every mirror failed:\n  " + "\n  ".join(failures))
