"""Logging that can never stop the program: bounded, rate-limited, written by one thread.

A long-running process (``ddsp-pd serve``) may have a stderr that nobody reads: a GUI, a
Pd-side launcher or a service manager that never drains the pipe. Once the pipe's buffer is
full, every write to it blocks - and a plain :class:`logging.StreamHandler` blocks while
holding its lock, so every thread that logs stops too. Here, instead:

- every record goes through a bounded queue (:class:`DroppingQueueHandler`); when the queue
  is full the record is dropped and counted, so logging never waits;
- one daemon thread (:class:`LogWriter`) formats and writes; only it can block on the pipe,
  and it writes to the file descriptor itself so it holds none of ``sys.stderr``'s locks;
- repeated lines are rate-limited (:class:`RateLimiter`): a few per window, then one
  "... and N more like it";
- messages are stripped of control characters and cut to a bounded length, and python-osc's
  own warnings, which quote raw datagram bytes, are dropped (:class:`LibraryPayloadFilter`).

:func:`configure` installs all of it on the root logger; the object it returns undoes it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TextIO

#: Records waiting for the writer; beyond this they are dropped and counted.
QUEUE_SIZE = 1000
#: Lines of one kind let through per window before they are counted instead.
BURST = 5
#: Seconds of a rate-limit window.
WINDOW_S = 10.0
#: Kinds of line tracked at once; more share one overflow kind.
MAX_KINDS = 256
#: Characters of a message kept (a traceback after it is kept whole).
MAX_MESSAGE_CHARS = 1000
#: How often the writer reports counts ("N more like it", drops) while lines keep coming.
SWEEP_S = 1.0
#: Seconds :meth:`BackgroundLog.close` waits for the writer to write what is queued.
CLOSE_TIMEOUT_S = 1.0

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

_OVERFLOW_KIND = ("ddsp_pd.logs", "overflow")
# Control characters (but not tab or newline) would let a sender's text move the cursor,
# clear the screen or forge log lines in a terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` with control characters escaped (``\\x1b``), cut to ``limit`` characters."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


# --- rate limiting ---------------------------------------------------------------------------
@dataclass
class Suppressed:
    """Items of one kind held back during one window: how many, and the last one."""

    kind: Hashable
    count: int
    last: Any


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    last: Any = None


@dataclass
class RateLimiter:
    """At most ``burst`` items of each kind per ``window`` seconds; the rest are counted.

    :meth:`allow` says whether one item may pass; :meth:`expired` hands back, once their
    window has ended, the counts of what was held back, so that a caller can report "... and
    N more like it". Thread-safe; the clock is injectable for tests.
    """

    burst: int = BURST
    window: float = WINDOW_S
    max_kinds: int = MAX_KINDS
    clock: Callable[[], float] = time.monotonic
    _windows: dict[Hashable, _Window] = field(default_factory=dict, init=False, repr=False)
    _due: list[Suppressed] = field(default_factory=list, init=False, repr=False)
    # Re-entrant: a signal handler that logs may interrupt this thread inside allow().
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def allow(self, kind: Hashable, item: Any = None) -> bool:
        """True if an item of ``kind`` may pass now; otherwise it is counted (``item`` kept
        as the last one held back)."""
        now = self.clock()
        with self._lock:
            state = self._windows.get(kind)
            if state is None:
                if len(self._windows) >= self.max_kinds:
                    self._forget_quiet(now)
                if len(self._windows) >= self.max_kinds:
                    kind = _OVERFLOW_KIND
                    state = self._windows.get(kind)
                if state is None:
                    state = self._windows[kind] = _Window(now)
            if now - state.start >= self.window:
                self._next_window(kind, state, now)
            if state.passed < self.burst:
                state.passed += 1
                return True
            state.suppressed += 1
            state.last = item
            return False

    def expired(self) -> list[Suppressed]:
        """What was held back in windows that have ended (each reported once)."""
        now = self.clock()
        with self._lock:
            for kind, state in self._windows.items():
                if state.suppressed and now - state.start >= self.window:
                    self._next_window(kind, state, now)
            due, self._due = self._due, []
            return due

    def pending(self) -> list[Suppressed]:
        """Everything held back so far, whether or not its window has ended (for shutdown)."""
        with self._lock:
            for kind, state in self._windows.items():
                self._close_window(kind, state)
            due, self._due = self._due, []
            return due

    def _next_window(self, kind: Hashable, state: _Window, now: float) -> None:
        # After a window that held items back the flood is still on: the next window starts
        # full, so a steady flood shows as one count per window. A quiet window resets it.
        flooding = state.suppressed > 0
        self._close_window(kind, state)
        state.start, state.passed = now, self.burst if flooding else 0

    def _close_window(self, kind: Hashable, state: _Window) -> None:
        if state.suppressed:
            self._due.append(Suppressed(kind, state.suppressed, state.last))
            state.suppressed, state.last = 0, None

    def _forget_quiet(self, now: float) -> None:
        quiet = [
            kind
            for kind, state in self._windows.items()
            if not state.suppressed and now - state.start >= self.window
        ]
        for kind in quiet:
            del self._windows[kind]


def record_kind(record: logging.LogRecord) -> Hashable:
    """What makes two records "alike": an explicit ``extra={"rate_key": ...}``, else the
    logger, the level and the unformatted message."""
    explicit = getattr(record, "rate_key", None)
    if explicit is not None:
        return (record.name, record.levelno, explicit)
    msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    return (record.name, record.levelno, msg)


class RateLimitFilter(logging.Filter):
    """Lets a few records of each kind through per window; counts the others."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or RateLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        return self.limiter.allow(record_kind(record), record)


class LibraryPayloadFilter(logging.Filter):
    """Drops python-osc's messages: it logs on the root logger and quotes datagrams' raw bytes.

    Our own decoding reports every bad datagram to its sender, so nothing is lost.
    """

    def __init__(self, packages: tuple[str, ...] = ("pythonosc",)) -> None:
        super().__init__()
        self._markers = tuple(f"{os.sep}{name}{os.sep}" for name in packages)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root" or not any(m in record.pathname for m in self._markers):
            return True
        self.dropped += 1  # a hint for tests and debugging; races only lose counts
        return False


# --- the queue and its writer ----------------------------------------------------------------
class _MessageFormatter(logging.Formatter):
    """The message (cleaned) and any traceback: what travels through the queue."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return clean_text(record.message)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A queue handler that never waits: a record that finds the queue full is counted.

    Formatting errors are counted as well instead of printing a traceback to stderr (which
    would block on a full pipe).
    """

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        # SimpleQueue, unlike Queue, may be used from a signal handler that interrupted a
        # put (the server logs in its SIGTERM handler); its size is bounded here instead.
        super().__init__(queue.SimpleQueue())
        self.maxsize = maxsize
        self.setFormatter(_MessageFormatter())
        self.dropped = 0
        self.failed = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        # emit() runs under the handler's lock, so the check and the put are one step.
        if self.queue.qsize() >= self.maxsize:
            self.dropped += 1
        else:
            self.queue.put_nowait(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed += 1


Sink = Callable[[str], None]


def stream_sink(stream: TextIO) -> Sink:
    """Write to ``stream``: to its file descriptor when it has one (no Python-level lock is
    held while a write blocks), else through its ``write``."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:

        def write_stream(text: str) -> None:
            stream.write(text)
            stream.flush()

        return write_stream
    encoding = getattr(stream, "encoding", None) or "utf-8"
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()  # what was printed before goes first

    def write_fd(text: str) -> None:
        data = text.encode(encoding, "backslashreplace")
        while data:
            data = data[os.write(fd, data) :]

    return write_fd


class LogWriter(threading.Thread):
    """The one thread that writes log lines; reports what was held back or dropped."""

    def __init__(
        self,
        handler: DroppingQueueHandler,
        limiter: RateLimiter,
        sink: Sink,
        formatter: logging.Formatter | None = None,
    ) -> None:
        super().__init__(name="ddsp-log-writer", daemon=True)
        self.handler = handler
        self.limiter = limiter
        self.sink = sink
        self.formatter = formatter or logging.Formatter(FORMAT, DATE_FORMAT)
        self.written = 0
        self.lost = 0  # lines the sink refused (closed stream, broken pipe)
        self._stop_event = threading.Event()
        self._reported = {"dropped": 0, "failed": 0}

    def run(self) -> None:
        last_sweep = time.monotonic()
        records: queue.SimpleQueue[Any] = self.handler.queue  # type: ignore[assignment]
        while True:
            try:
                record = records.get(timeout=SWEEP_S / 4)
            except queue.Empty:
                record = None
            if record is not None and record is not _STOP:
                self._write(record)
            if record is None or time.monotonic() - last_sweep >= SWEEP_S:
                self._report(self.limiter.expired())
                last_sweep = time.monotonic()
            if self._stop_event.is_set() and records.empty():
                self._report(self.limiter.pending())
                return

    def stop(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Write what is queued, for at most ``timeout`` seconds; True if everything was."""
        self._stop_event.set()
        self.handler.queue.put_nowait(_STOP)  # wakes the writer at once
        if self.is_alive():
            self.join(timeout)
        return not self.is_alive()

    def _report(self, held_back: list[Suppressed]) -> None:
        for item in held_back:
            last = item.last
            if isinstance(last, logging.LogRecord):
                try:
                    text = clean_text(last.getMessage(), 200)
                except Exception:  # a broken log call: its template still says what it was
                    text = clean_text(str(last.msg), 200)
                self._write(
                    _notice(
                        last.name,
                        last.levelno,
                        f"... and {item.count} more like it (the last: {text})",
                    )
                )
            else:
                self._write(_notice("ddsp_pd.logs", logging.INFO, f"... and {item.count} more"))
        for counter, text in (
            ("dropped", "log lines dropped because the log could not keep up"),
            ("failed", "log calls failed to format"),
        ):
            now = getattr(self.handler, counter)
            new = now - self._reported[counter]
            if new > 0:
                self._reported[counter] = now
                self._write(_notice("ddsp_pd.logs", logging.WARNING, f"{new} {text}"))

    def _write(self, record: logging.LogRecord) -> None:
        try:
            line = self.formatter.format(record) + "\n"
            self.sink(line)
            self.written += 1
        except Exception:
            # A closed or broken stream: nothing can be told, but nothing may stop either.
            self.lost += 1


_STOP = object()


def _notice(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
    )


# --- installing it ---------------------------------------------------------------------------
class BackgroundLog:
    """The root logger's handler, filters and writer thread, installed until :meth:`close`."""

    def __init__(
        self,
        level: int,
        sink: Sink,
        limiter: RateLimiter | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.level = level
        self.limiter = limiter or RateLimiter()
        self.handler = DroppingQueueHandler(queue_size)
        self.payloads = LibraryPayloadFilter()
        self.handler.addFilter(self.payloads)
        self.handler.addFilter(RateLimitFilter(self.limiter))
        self.writer = LogWriter(self.handler, self.limiter, sink)
        self._previous_level: int | None = None
        self._previous_excepthook: Any = None
        self._captured_warnings = False
        self._closed = False

    def install(self) -> BackgroundLog:
        """Start the writer and route the root logger, warnings and thread crashes to it."""
        root = logging.getLogger()
        self._previous_level = root.level
        self.writer.start()
        root.addHandler(self.handler)
        root.setLevel(self.level)
        if getattr(logging, "_warnings_showwarning", None) is None:
            logging.captureWarnings(True)
            self._captured_warnings = True
        # The default hook prints a dying thread's traceback to stderr, where it could block.
        self._previous_excepthook = threading.excepthook
        threading.excepthook = _log_thread_crash
        return self

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Write what is queued (at most ``timeout`` s) and restore the previous logging.

        Returns False if the writer could not finish (its output is blocked); later records
        then go nowhere instead of to a stderr that would block.
        """
        if self._closed:
            return True
        self._closed = True
        root = logging.getLogger()
        if threading.excepthook is _log_thread_crash:
            threading.excepthook = self._previous_excepthook
        if self._captured_warnings:
            logging.captureWarnings(False)
        finished = self.writer.stop(timeout)
        root.removeHandler(self.handler)
        if not finished and not root.handlers:
            root.addHandler(logging.NullHandler())
        if self._previous_level is not None:
            root.setLevel(self._previous_level)
        return finished

    def __call__(self) -> None:
        """Close (so that the object itself can be a ``call_on_close`` callback)."""
        self.close()


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("ddsp_pd.threads").error(
        "unexpected error in %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


_active: BackgroundLog | None = None
_active_lock = threading.Lock()


def configure(level: str | int = "info", stream: TextIO | None = None) -> BackgroundLog:
    """Log to ``stream`` (stderr) through :class:`BackgroundLog`; replaces an earlier call's.

    Returns the installed object; calling it (or its :meth:`~BackgroundLog.close`) undoes
    the configuration. It is also closed at exit, waiting at most
    :data:`CLOSE_TIMEOUT_S` for a blocked stderr.
    """
    global _active
    numeric = level if isinstance(level, int) else getattr(logging, str(level).upper())
    sink = stream_sink(stream if stream is not None else sys.stderr)
    with _active_lock:
        if _active is not None:
            _active.close()
        _active = BackgroundLog(numeric, sink).install()
        return _active


def _close_at_exit() -> None:
    with _active_lock:
        if _active is not None:
            _active.close()


# Registered after logging's own exit hook (logging is imported first), so it runs first:
# atexit is last-in, first-out, and logging's hook flushes every handler it knows.
atexit.register(_close_at_exit)
