"""The server's output folder: unique names, atomic writes, and pruning of old results.

Only files the server names itself (``render-*.wav``, ``features-*.wav``, ``input-*.wav`` and
their temporary files) are ever deleted, so pointing ``--output-dir`` at a folder with other
files is safe.
Temporary files name the process that writes them; at start, those of processes that no
longer run are the remains of a killed write and are removed at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ddsp_pd.errors import OutputError
from ddsp_pd.server.state import MAX_STRING_BYTES, utf8_len

log = logging.getLogger(__name__)

#: Results of each kind kept in the folder; older ones are deleted after each write.
DEFAULT_KEEP = 20
KINDS = ("render", "features", "input")
_NAME = re.compile(r"^(render|features|input)-\d{8}-\d{6}-\d{3}-\d+-\d{4,}\.wav$")
# audio_io's temporary names: ".<final name>.<pid of the writer>.<hex>.tmp"
_TMP = re.compile(r"^\.(render|features|input)-.*\.wav\.(\d+)\.[0-9a-f]+\.tmp$")
#: Temporary files older than this (seconds) are removed even if their writer seems to run
#: (its pid may have been reused since).
STALE_TMP_S = 3600.0


def _writer_gone(pid: int) -> bool:
    """Whether the process that wrote a temporary file has ended (best effort).

    Another server may share the folder and be writing right now, so a live writer's file
    stays. On Windows a file that is still open cannot be deleted, which protects it anyway.
    """
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would terminate the process there
    if pid <= 0:
        return True  # no process writes as pid 0, and os.kill(0, ...) means the whole group
    if pid == os.getpid():
        return False  # this very process may be writing it
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except OSError:
        return False  # e.g. EPERM: it runs, as another user
    return False


def leftover_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """The server's temporary files in ``folder`` that no write will finish: their writer
    has ended, or they are older than :data:`STALE_TMP_S`."""
    now = time.time() if now is None else now
    found = []
    for path in folder.iterdir():
        match = _TMP.match(path.name)
        if match is None:
            continue
        try:
            if not path.is_file() or path.is_symlink():
                continue
            old = now - path.stat().st_mtime > STALE_TMP_S
        except OSError:
            continue
        if old or _writer_gone(int(match.group(2))):
            found.append(path)
    return found


def _write_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    # Imported late: audio_io pulls in soxr, which the server needs only once it writes.
    from ddsp_pd.audio_io import write_wav_atomic

    return write_wav_atomic(path, audio, sample_rate, subtype="FLOAT")


class OutputFolder:
    """A folder the server writes its results to, keeping the last ``keep`` of each kind."""

    def __init__(self, folder: str | os.PathLike[str], keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise OutputError(f"--keep must be at least 1, got {keep}")
        self.folder = Path(folder).expanduser().resolve()
        self.keep = keep
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Create the folder and clear stale temporary files; raise OutputError if unusable."""
        # Paths travel in OSC replies and Pd cuts symbols over 999 bytes; leave room for names.
        if utf8_len(str(self.folder)) > MAX_STRING_BYTES - 100:
            raise OutputError(f"output folder path is too long for OSC: {str(self.folder)[:80]}...")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.folder}: {exc.strerror}") from exc
        if not os.access(self.folder, os.W_OK):
            raise OutputError(f"output folder {self.folder} is not writable")
        removed = 0
        for path in leftover_temporaries(self.folder):
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass  # in use (Windows) or already gone
        if removed:
            log.info("removed %d unfinished file(s) of an earlier run in %s", removed, self.folder)

    def new_path(self, kind: str) -> Path:
        """A fresh, unique file name for a result of ``kind`` (``render`` or ``features``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r}")
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        millis = int((now % 1) * 1000)
        count = next(self._counter)
        return self.folder / f"{kind}-{stamp}-{millis:03d}-{os.getpid()}-{count:04d}.wav"

    def write(self, kind: str, audio: np.ndarray, sample_rate: int) -> Path:
        """Write a 32-bit float WAV atomically, then prune old results of that kind."""
        path = _write_atomic(self.new_path(kind), audio, sample_rate)
        self.prune(kind)
        return path

    def results(self, kind: str) -> list[Path]:
        """The server-named results of ``kind`` in the folder, oldest first."""
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match and match.group(1) == kind:
                try:
                    found.append((path.stat().st_mtime_ns, path.name, path))
                except OSError:
                    continue
        return [p for _, _, p in sorted(found)]

    def prune(self, kind: str) -> list[Path]:
        """Delete all but the newest ``keep`` results of ``kind``; returns what was deleted."""
        with self._lock:
            old = self.results(kind)[: -self.keep]
            removed = []
            for path in old:
                try:
                    path.unlink()
                    removed.append(path)
                except OSError as exc:
                    log.warning("cannot remove old result %s: %s", path, exc)
            return removed
