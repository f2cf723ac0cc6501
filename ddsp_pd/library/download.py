"""HTTP downloads for the model library: resume, retries, timeouts, size and checksum checks.

The client is ``requests`` (Apache-2.0): it streams, honours the usual proxy and CA-bundle
environment variables (``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE``) and ships certifi's CA
bundle, which ``urllib.request`` lacks on some platforms (python.org builds on macOS); its
errors tell a cut connection (``ChunkedEncodingError``) from a timeout or a refused one.
It is already installed wherever TensorFlow or librosa's ``pooch`` is. ``httpx`` would do as
well but is not installed here and adds nothing a blocking, one-file-at-a-time download needs.

A file downloads into ``NAME.part`` beside a ``NAME.part.json`` that records the URL and the
server's validators (ETag, Last-Modified). A later attempt, in the same run after a cut
connection or in a later run after Ctrl-C, asks for the rest with ``Range`` and ``If-Range``:
a server that answers 200 instead of 206 (it ignores ranges, or the file changed) restarts
the file from zero. The size must match what the listing said (else what Content-Range or
Content-Length said), and the MD5 the listing gave, if any.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ddsp_pd import __version__
from ddsp_pd.errors import CheckpointError, OutputError
from ddsp_pd.library.published import RemoteFile

__all__ = [
    "DownloadError",
    "Fetcher",
    "HttpOptions",
    "library_write_error",
    "sha256_of",
]

# Small enough that a cut connection loses little (the chunk being read when it breaks).
_CHUNK = 1 << 14
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Opened through this name so tests can stand in a file that fills up (ENOSPC).
_open_part = open


class DownloadError(CheckpointError):
    """A model could not be fetched: not found, refused, cut short, or not what was asked for.

    ``status`` is the HTTP status that settled it, if one did; ``unreachable`` is True when
    every attempt failed on the network (the next model would fare no better).
    """

    code = "download"

    def __init__(self, message: str, status: int | None = None, unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


@dataclass(frozen=True)
class HttpOptions:
    """How patient to be: seconds to connect and between bytes, and retries after a failure.

    Retry ``k`` (from 1) waits ``backoff * 2**(k - 1)`` seconds, at most 30.
    """

    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5


class _TransientError(Exception):
    """A failure worth another attempt (a cut connection, a timeout, a 5xx)."""


def library_write_error(exc: OSError, where: Path) -> OutputError:
    """One line for an OSError while writing into the library (full, read-only, refused)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left on the device of {where} (the download was removed)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(
            f"cannot write to the model library {where}: {exc.strerror or exc} "
            f"(set DDSP_PD_MODELS_DIR to a writable folder)"
        )
    return OutputError(f"cannot write {where}: {exc.strerror or exc}")


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_of(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Fetcher:
    """Fetches files over HTTP with one :class:`requests.Session` (connections are reused).

    ``sleep`` waits between attempts (tests pass a no-op).
    """

    def __init__(
        self,
        options: HttpOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options or HttpOptions()
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ddsp-pd/{__version__}"

    def close(self) -> None:
        """Close the connections."""
        self.session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- small bodies

    def get_bytes(self, url: str, limit: int) -> bytes | None:
        """The whole body of ``url`` (at most ``limit`` bytes), or None when it is not there
        (404 or 410). Other failures raise :class:`DownloadError` after the retries."""
        last = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                self._wait(attempt)
            try:
                with self._get(url, {}) as resp:
                    if resp.status_code in (404, 410):
                        return None
                    self._refuse_status(resp, url)
                    body = bytearray()
                    for chunk in resp.iter_content(_CHUNK):
                        body += chunk
                        if len(body) > limit:
                            raise DownloadError(f"{url} is over the {limit:,} bytes expected")
                    return bytes(body)
            except _TransientError as exc:
                last = str(exc)
        raise DownloadError(f"cannot fetch {url}: {last}", unreachable=True)

    def head_size(self, url: str) -> int | None:
        """The Content-Length a HEAD request gives, or None (not there, or not said)."""
        try:
            resp = self.session.head(url, timeout=self._timeouts(), allow_redirects=True)
        except requests.RequestException:
            return None
        with resp:
            if resp.status_code != 200:
                return None
            return _int_header(resp.headers.get("Content-Length"))

    # ----------------------------------------------------------------- files

    def download(
        self,
        remote: RemoteFile,
        part: Path,
        *,
        check_head: Callable[[bytes, str], None] | None = None,
        progress: Callable[[int], None] | None = None,
        max_bytes: int = 4 << 30,
    ) -> Path:
        """Fetch ``remote`` into ``part`` (resuming what is there); return ``part``, complete.

        ``check_head(first_bytes, content_type)`` may raise to refuse the file as soon as its
        first bytes arrive (an HTML page instead of a model). ``progress(position)`` is called
        as bytes arrive. A failure after every retry raises :class:`DownloadError` and keeps
        the part for a later resume, except when what arrived is wrong (refused, over size,
        checksum mismatch): then the part is removed.
        """
        state_path = part.with_name(part.name + ".json")
        state = _read_state(state_path)
        if state.get("url") != remote.url:
            _remove(part, state_path)
            state = {"url": remote.url}
        last = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                self._wait(attempt)
            try:
                if self._attempt(remote, part, state, state_path, check_head, progress, max_bytes):
                    break
                last = "the connection closed before the end of the file"
            except _TransientError as exc:
                last = str(exc)
            except DownloadError:
                _remove(part, state_path)
                raise
        else:
            have = part.stat().st_size if part.exists() else 0
            total = f" of {_mb(remote.size)}" if remote.size else ""
            raise DownloadError(
                f"download of {remote.url} failed after {self.options.retries + 1} attempts "
                f"({last}); {_mb(have)}{total} kept: run the command again to resume",
                unreachable=have == 0,
            )
        if remote.md5 is not None and _md5_of(part) != remote.md5:
            _remove(part, state_path)
            raise DownloadError(
                f"{remote.name} arrived damaged (its MD5 is not the listing's); run the "
                "command again to fetch it anew"
            )
        state_path.unlink(missing_ok=True)
        return part

    def _attempt(
        self,
        remote: RemoteFile,
        part: Path,
        state: dict[str, Any],
        state_path: Path,
        check_head: Callable[[bytes, str], None] | None,
        progress: Callable[[int], None] | None,
        max_bytes: int,
    ) -> bool:
        """One request; True when ``part`` now holds the whole file."""
        offset = part.stat().st_size if part.exists() else 0
        if remote.size is not None and offset > remote.size:
            offset = 0  # longer than the listing says: not a prefix of this file
        if remote.size is not None and offset == remote.size and offset > 0:
            return True
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = state.get("etag") or state.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        with self._get(remote.url, headers) as resp:
            status = resp.status_code
            if status == 416 and offset:
                total = _content_range_total(resp.headers.get("Content-Range"))
                if total is not None and total == offset:
                    return True  # the part was already whole
                _truncate(part)
                raise _TransientError("the server refused to resume; starting the file again")
            self._refuse_status(resp, remote.url)
            if status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"), remote.url)
                if start != offset:
                    _truncate(part)
                    raise _TransientError("the server resumed at the wrong place; starting again")
            elif status == 200:
                offset, total = 0, _int_header(resp.headers.get("Content-Length"))
            else:
                raise DownloadError(f"{remote.url}: unexpected HTTP status {status}")
            content_type = resp.headers.get("Content-Type", "")
            if check_head is not None and offset == 0:
                check_head(b"", content_type)  # a web page says so before its size is judged
            expected = remote.size if remote.size is not None else total
            if remote.size is not None and total is not None and total != remote.size:
                raise DownloadError(
                    f"{remote.url} is {total:,} bytes on the server but the listing says "
                    f"{remote.size:,}: the file is truncated or not the one listed"
                )
            if expected is not None and expected > max_bytes:
                raise DownloadError(f"{remote.url} is {expected:,} bytes, over the limit")
            state.update(
                etag=resp.headers.get("ETag"), last_modified=resp.headers.get("Last-Modified")
            )
            _write_state(state_path, state)
            position = self._stream(
                resp, part, offset, expected, max_bytes, check_head, content_type, progress
            )
        if expected is None:
            return True  # nothing said how long: the content checks judge what came
        return position == expected

    def _stream(
        self,
        resp: requests.Response,
        part: Path,
        offset: int,
        expected: int | None,
        max_bytes: int,
        check_head: Callable[[bytes, str], None] | None,
        content_type: str,
        progress: Callable[[int], None] | None,
    ) -> int:
        position = offset
        limit = expected if expected is not None else max_bytes
        try:
            with _open_part(part, "ab" if offset else "wb") as out:
                head_checked = offset > 0
                try:
                    for chunk in resp.iter_content(_CHUNK):
                        if not head_checked:
                            if check_head is not None:
                                check_head(chunk, content_type)
                            head_checked = True
                        position += len(chunk)
                        if position > limit:
                            raise DownloadError(f"{resp.url} sent more bytes than it announced")
                        out.write(chunk)
                        if progress is not None:
                            progress(position)
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise _TransientError(_reason(exc)) from exc
                except requests.RequestException as exc:  # ChunkedEncodingError: cut short
                    raise _TransientError(_reason(exc)) from exc
        except OSError as exc:
            _remove(part, part.with_name(part.name + ".json"))
            raise library_write_error(exc, part.parent) from exc
        return position

    # ----------------------------------------------------------------- helpers

    def _timeouts(self) -> tuple[float, float]:
        return (self.options.timeout, self.options.timeout)

    @contextlib.contextmanager
    def _get(self, url: str, headers: dict[str, str]):
        # identity: the bytes counted are the bytes on disk (no transparent gzip).
        headers = {"Accept-Encoding": "identity", **headers}
        try:
            resp = self.session.get(
                url, headers=headers, stream=True, timeout=self._timeouts(), allow_redirects=True
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise DownloadError(f"not a usable URL: {url}") from exc
        except requests.RequestException as exc:
            raise _TransientError(_reason(exc)) from exc
        try:
            yield resp
        finally:
            resp.close()

    def _refuse_status(self, resp: requests.Response, url: str) -> None:
        status = resp.status_code
        if status in (200, 206):
            return
        if status in _TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {status} {resp.reason or ''}".strip())
        if status in (404, 410):
            raise DownloadError(f"not found on the server (HTTP {status}): {url}", status)
        if status in (401, 403):
            raise DownloadError(f"the server refused access (HTTP {status}): {url}", status)
        raise DownloadError(f"HTTP {status} {resp.reason or ''} for {url}".strip(), status)

    def _wait(self, attempt: int) -> None:
        self.sleep(min(30.0, self.options.backoff * 2 ** (attempt - 1)))


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection was cut mid-file"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return type(exc).__name__


def _int_header(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"^bytes \*/(\d+)$", (value or "").strip())
    return int(match.group(1)) if match else None


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        raise DownloadError(f"{url}: a partial answer without a usable Content-Range")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(state), encoding="utf-8")
    except OSError as exc:
        raise library_write_error(exc, path.parent) from exc


def _truncate(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.truncate(part, 0)


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
