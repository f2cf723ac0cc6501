"""A local stand-in for Cloud Storage's public HTTPS endpoints, for the model library tests.

It serves, on 127.0.0.1 only, a tree of objects by path (``/BUCKET/OBJECT``), with Range
and If-Range as GCS answers them, and the JSON API's listing
(``/storage/v1/b/BUCKET/o?prefix=...&pageToken=...``). Faults can be set per object path:
a connection cut after some bytes, an HTML page instead of the object, a status, a stall.
Every request is logged. Imported by tests; it holds no tests itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body>Please sign in to continue.</body></html>\n"
)


@dataclass
class Fault:
    """What goes wrong when an object is fetched (``times`` requests, then it behaves)."""

    cut_after: int | None = None  # send the headers of the whole body, then this many bytes
    html: bool = False  # a 200 HTML page instead of the object
    status: int | None = None  # answer this status with an empty body
    stall: float = 0.0  # seconds to wait before answering
    ignore_range: bool = False  # answer 200 with the whole object to a Range request
    times: int = 1_000_000


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ModelServer:
    """The tree, the faults, the log; ``origin`` once started."""

    objects: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    listing: bool = True
    page_size: int = 1000
    wrong_md5: set[str] = field(default_factory=set)
    origin: str = ""

    def put(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``/path`` (``bucket/object``)."""
        self.objects["/" + path.lstrip("/")] = data

    def requests_for(self, path: str) -> list[Request]:
        """The logged requests of one object path."""
        return [r for r in self.log if r.path == "/" + path.lstrip("/")]

    def object_requests(self) -> list[Request]:
        """Every logged request that was not a listing."""
        return [r for r in self.log if not r.path.startswith("/storage/")]

    def fault(self, path: str) -> Fault | None:
        fault = self.faults.get(path)
        if fault is None or fault.times <= 0:
            return None
        fault.times -= 1
        return fault


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _handler(server: ModelServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            server.log.append(Request(self.command, path, dict(self.headers.items())))
            if path.startswith("/storage/v1/b/"):
                self._listing(path, urllib.parse.parse_qs(url.query))
                return
            fault = server.fault(path)
            if fault is not None and fault.stall:
                time.sleep(fault.stall)
            if fault is not None and fault.status is not None:
                self._empty(fault.status)
                return
            if fault is not None and fault.html:
                self._send(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"}, head)
                return
            data = server.objects.get(path)
            if data is None:
                self._empty(404)
                return
            headers = {"Content-Type": "application/octet-stream", "ETag": _etag(data)}
            start = 0
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and not (fault and fault.ignore_range) and if_range in (None, _etag(data)):
                first = int(wanted.removeprefix("bytes=").split("-")[0])
                if first >= len(data):
                    self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                start = first
                headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
            status = 206 if "Content-Range" in headers else 200
            body = data[start:]
            if fault is not None and fault.cut_after is not None:
                self._send(status, body, headers, head, cut=fault.cut_after)
                return
            self._send(status, body, headers, head)

        def _listing(self, path: str, query: dict[str, list[str]]) -> None:
            if not server.listing:
                self._empty(404)
                return
            bucket = path.split("/")[4]
            prefix = query.get("prefix", [""])[0]
            token = int(query.get("pageToken", ["0"])[0])
            names = sorted(
                p[len(bucket) + 2 :]
                for p in server.objects
                if p.startswith(f"/{bucket}/") and p[len(bucket) + 2 :].startswith(prefix)
            )
            page = names[token : token + server.page_size]
            items = []
            for name in page:
                data = server.objects[f"/{bucket}/{name}"]
                digest = hashlib.md5(data).digest()
                if f"{bucket}/{name}" in server.wrong_md5:
                    digest = hashlib.md5(b"something else").digest()
                items.append(
                    {
                        "kind": "storage#object",
                        "name": name,
                        "bucket": bucket,
                        "size": str(len(data)),
                        "md5Hash": base64.b64encode(digest).decode(),
                    }
                )
            result: dict[str, Any] = {"kind": "storage#objects"}
            if items:  # like GCS: no "items" at all when nothing matches
                result["items"] = items
            if token + server.page_size < len(names):
                result["nextPageToken"] = str(token + server.page_size)
            body = json.dumps(result).encode()
            self._send(200, body, {"Content-Type": "application/json"}, False)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self._send(status, b"", headers or {}, False)

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str],
            head: bool,
            cut: int | None = None,
        ) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if cut is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            if head:
                return
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a cut or stalled answer is what the tests want


@contextlib.contextmanager
def serving(server: ModelServer) -> Iterator[ModelServer]:
    """Run ``server`` on a free port of 127.0.0.1 until the block ends."""
    httpd = _QuietServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.02,), name="model-server", daemon=True
    )
    thread.start()
    server.origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
