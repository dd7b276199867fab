"""A real HTTP file server on 127.0.0.1 for download tests: Range and If-Range requests, strong ETags,
and on demand a connection cut after some bytes, an entity that changes after that cut, a body
without Content-Length, redirects, a server that ignores Range or If-Range, a body sent one byte at a
time (slow) and an endless body."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def etag(body: bytes) -> str:
    """The ETag the server sends for body."""
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the next cut (once)
    after_cut: dict[str, bytes] = field(default_factory=dict)  # path -> what it serves once that cut is made
    no_length: set[str] = field(default_factory=set)  # paths served without Content-Length
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds between the bytes of its body
    endless: set[str] = field(default_factory=set)  # paths whose body (no Content-Length) never ends
    ignore_range: bool = False
    ignore_if_range: bool = False  # a Range is served whatever If-Range says
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    if_ranges: list[str | None] = field(default_factory=list)  # each request's If-Range header


class FileServer:
    def __init__(self):
        self.behaviour = Behaviour()
        behaviour = self.behaviour

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                ranged, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                behaviour.requests.append((path, ranged))
                behaviour.if_ranges.append(if_range)
                if path in behaviour.redirects:
                    self.send_response(302)
                    self.send_header("Location", behaviour.redirects[path])
                    self.end_headers()
                    return
                if path in behaviour.endless:
                    self.send_response(200)
                    self.end_headers()
                    self.close_connection = True
                    self._send(iter(lambda: bytes(1 << 16), None), 0)
                    return
                body = behaviour.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                if if_range is not None and if_range != etag(body) and not behaviour.ignore_if_range:
                    ranged = None  # another entity than the client's: it gets the whole of this one
                start = 0
                if ranged and not behaviour.ignore_range:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("ETag", etag(body))
                if path not in behaviour.no_length:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut = behaviour.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    if path in behaviour.after_cut:
                        behaviour.files[path] = behaviour.after_cut.pop(path)
                    self.close_connection = True
                    self.connection.shutdown(2)  # the rest never comes: a cut connection
                    return
                if path in behaviour.slow:
                    self._send((payload[i:i + 1] for i in range(len(payload))), behaviour.slow[path])
                    return
                self.wfile.write(payload)

            def _send(self, blocks, pause: float) -> None:
                """Write blocks, pausing between them, until they end or the client hangs up."""
                try:
                    for block in blocks:
                        self.wfile.write(block)
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
