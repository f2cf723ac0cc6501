"""``ddsp_pd.library.download``: resume, retries, size, checksum and content checks.

Everything runs against tests/model_server.py on 127.0.0.1.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from ddsp_pd.errors import OutputError
from ddsp_pd.library import download
from ddsp_pd.library.checks import head_check
from ddsp_pd.library.download import DownloadError, Fetcher, HttpOptions
from ddsp_pd.library.published import RemoteFile
from tests.model_server import Fault, ModelServer, serving

DATA = bytes(range(256)) * 1000  # 256 kB, every byte position distinguishable
PATH = "bucket/models/thing.bin"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests honours proxy variables: the tests talk to 127.0.0.1 directly.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    srv = ModelServer()
    srv.put(PATH, DATA)
    with serving(srv):
        yield srv


def fetcher(retries: int = 3, timeout: float = 10.0) -> Fetcher:
    return Fetcher(HttpOptions(timeout=timeout, retries=retries), sleep=lambda _s: None)


def remote(server: ModelServer, listed: bool = True, md5: bytes | None = None) -> RemoteFile:
    return RemoteFile(
        name="thing.bin",
        url=f"{server.origin}/{PATH}",
        size=len(DATA) if listed else None,
        md5=(md5 or hashlib.md5(DATA).digest()) if listed else None,
    )


def test_downloads_the_whole_file(server: ModelServer, tmp_path: Path) -> None:
    part = tmp_path / "thing.bin.part"
    seen: list[int] = []
    with fetcher() as f:
        f.download(remote(server), part, progress=seen.append)
    assert part.read_bytes() == DATA
    assert seen[-1] == len(DATA)
    assert not part.with_name("thing.bin.part.json").exists()


def test_resumes_after_a_cut_connection(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(cut_after=100_000, times=1)
    part = tmp_path / "thing.bin.part"
    with fetcher() as f:
        f.download(remote(server), part)
    assert part.read_bytes() == DATA
    first, second = server.requests_for(PATH)
    assert "Range" not in first.headers
    # It asks for the rest only (a read cut mid-chunk loses that chunk's bytes, no more).
    start = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 100_000
    assert second.headers["If-Range"] == '"' + hashlib.md5(DATA).hexdigest() + '"'


def test_resumes_in_a_later_run_from_the_kept_part(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(cut_after=50_000, times=1)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=0) as f, pytest.raises(DownloadError, match="run the command again"):
        f.download(remote(server), part)
    kept = part.stat().st_size
    assert 0 < kept <= 50_000
    with fetcher(retries=0) as f:
        f.download(remote(server), part)
    assert part.read_bytes() == DATA
    assert server.requests_for(PATH)[-1].headers["Range"] == f"bytes={kept}-"


def test_a_server_ignoring_range_restarts_the_file(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(cut_after=70_000, times=1)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=0) as f, pytest.raises(DownloadError):
        f.download(remote(server), part)
    server.faults["/" + PATH] = Fault(ignore_range=True, times=1)
    with fetcher(retries=0) as f:
        f.download(remote(server), part)
    assert part.read_bytes() == DATA  # not the first 70 kB twice


def test_a_changed_file_is_fetched_anew_not_spliced(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(cut_after=60_000, times=1)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=0) as f, pytest.raises(DownloadError):
        f.download(remote(server, listed=False), part)
    new = DATA[::-1]
    server.put(PATH, new)  # the ETag changes: If-Range makes the server send it whole
    with fetcher(retries=0) as f:
        f.download(remote(server, listed=False), part)
    assert part.read_bytes() == new


def test_404_is_a_clear_error_and_leaves_nothing(server: ModelServer, tmp_path: Path) -> None:
    part = tmp_path / "missing.part"
    missing = RemoteFile("missing", f"{server.origin}/bucket/missing", 10)
    with fetcher() as f, pytest.raises(DownloadError, match="not found") as err:
        f.download(missing, part)
    assert err.value.status == 404
    assert not part.exists()
    assert len(server.requests_for("bucket/missing")) == 1  # no retry of a 404


def test_a_body_cut_every_time_fails_after_the_retries(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(cut_after=0)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=2) as f, pytest.raises(DownloadError, match="after 3 attempts"):
        f.download(remote(server), part)
    assert len(server.requests_for(PATH)) == 3


def test_a_file_shorter_than_listed_is_refused(server: ModelServer, tmp_path: Path) -> None:
    server.put(PATH, DATA[:1000])  # the listing (below) still says the whole size
    part = tmp_path / "thing.bin.part"
    with fetcher() as f, pytest.raises(DownloadError, match="truncated"):
        f.download(remote(server), part)
    assert not part.exists()


def test_an_html_page_is_not_a_model(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(html=True)
    part = tmp_path / "ckpt-1.index.part"
    with fetcher() as f, pytest.raises(DownloadError, match="web page"):
        f.download(remote(server, listed=False), part, check_head=head_check("ckpt-1.index"))
    assert not part.exists()


def test_a_wrong_checksum_removes_the_file(server: ModelServer, tmp_path: Path) -> None:
    part = tmp_path / "thing.bin.part"
    bad = remote(server, md5=hashlib.md5(b"other").digest())
    with fetcher() as f, pytest.raises(DownloadError, match="MD5"):
        f.download(bad, part)
    assert not part.exists()


def test_server_errors_are_retried(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(status=503, times=2)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=2) as f:
        f.download(remote(server), part)
    assert part.read_bytes() == DATA


def test_a_stalled_server_times_out_and_is_retried(server: ModelServer, tmp_path: Path) -> None:
    server.faults["/" + PATH] = Fault(stall=2.0, times=1)
    part = tmp_path / "thing.bin.part"
    with fetcher(retries=1, timeout=0.3) as f:
        f.download(remote(server), part)
    assert part.read_bytes() == DATA


def test_an_unreachable_origin_says_so(tmp_path: Path) -> None:
    with serving(ModelServer()) as srv:
        origin = srv.origin
    gone = RemoteFile("x", f"{origin}/bucket/x", 10)  # nothing listens there any more
    with fetcher(retries=1) as f, pytest.raises(DownloadError, match="cannot connect") as err:
        f.download(gone, tmp_path / "x.part")
    assert err.value.unreachable


class _FillsUp(io.FileIO):
    """A part file on a device with ``room`` bytes left."""

    room = 30_000

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(
    server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "_open_part", lambda path, mode: _FillsUp(path, mode[0]))
    part = tmp_path / "thing.bin.part"
    with fetcher() as f, pytest.raises(OutputError, match="no space left"):
        f.download(remote(server), part)
    assert not part.exists()
    assert not part.with_name("thing.bin.part.json").exists()
