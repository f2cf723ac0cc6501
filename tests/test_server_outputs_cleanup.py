"""At start the server removes the temporary files a killed write left, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server_support import running_service

from ddsp_pd.server.outputs import STALE_TMP_S, OutputFolder

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="tells live writers by pid, which is POSIX-only here"
)


def ended_pid() -> int:
    """The pid of a process that has already ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that is running (as a second server sharing the folder)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait(10)


def temporary(folder: Path, kind: str, pid: int, age_s: float = 0.0, count: int = 1) -> Path:
    """A temporary file named as audio_io names them while ``pid`` writes ``kind``."""
    final = f"{kind}-20260101-120000-000-{pid}-{count:04d}.wav"
    path = folder / f".{final}.{pid}.0a1b2c3d.tmp"
    path.write_bytes(b"RIFF partial")
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return path


def test_start_removes_temporaries_of_ended_writers_only(tmp_path: Path, live_pid: int) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    dead = ended_pid()
    leftovers = [temporary(folder, "render", dead), temporary(folder, "features", dead)]
    stale_live = temporary(folder, "render", live_pid, age_s=STALE_TMP_S + 60)
    fresh_live = temporary(folder, "render", live_pid, count=2)
    fresh_own = temporary(folder, "features", os.getpid())
    others = [
        folder / "render-20260101-120000-000-1-0001.wav",  # a finished result
        folder / "notes.tmp",
        folder / ".render-take.wav.tmp",  # no pid: not one of ours
        folder / ".other-20260101.wav.123.0a1b2c3d.tmp",
        folder / f".render-x.wav.{dead}.0a1b2c3d.tmp.bak",
    ]
    for path in others:
        path.write_bytes(b"keep me")
    same_name_folder = folder / f".render-dir.wav.{dead}.0a1b2c3d.tmp"
    same_name_folder.mkdir()

    OutputFolder(folder).prepare()

    for path in [*leftovers, stale_live]:
        assert not path.exists(), f"{path.name} was left"
    for path in [fresh_live, fresh_own, *others]:
        assert path.exists(), f"{path.name} was removed"
    assert same_name_folder.is_dir()
    assert all(p.read_bytes() == b"keep me" for p in others)


def test_a_served_folder_is_cleaned_when_the_service_starts(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    leftover = temporary(folder, "render", ended_pid())
    result = folder / "render-20260101-120000-000-1-0001.wav"
    result.write_bytes(b"keep me")
    with running_service(tmp_path, output_dir=folder) as (_service, client, _engine):
        assert not leftover.exists()
        assert result.exists()
        client.ping()


def test_a_temporary_naming_an_impossible_pid_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    huge = folder / ".render-x.wav.99999999999999999999999.0a1b2c3d.tmp"
    huge.write_bytes(b"")
    zero = folder / ".render-x.wav.0.0a1b2c3d.tmp"
    zero.write_bytes(b"")
    OutputFolder(folder).prepare()
    assert not huge.exists() and not zero.exists()
