"""The logging machinery of ddsp_pd.logs: rate limiting, the dropping queue, the writer."""

from __future__ import annotations

import io
import logging
import os
import threading

import pytest
from pythonosc.osc_packet import OscPacket

from ddsp_pd import logs
from ddsp_pd.logs import (
    BackgroundLog,
    DroppingQueueHandler,
    LibraryPayloadFilter,
    LogWriter,
    RateLimiter,
    clean_text,
    stream_sink,
)

#: Bounds on waits that only turn a hang into a failure.
WAIT_S = 10.0


class Clock:
    """A settable clock for the rate limiter."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the rate limiter --------------------------------------------------------------------------
def test_rate_limiter_passes_a_burst_then_counts() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=3, window=10.0, clock=clock)
    passed = [limiter.allow("a", i) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limiter.allow("b") is True  # another kind has its own budget
    clock.now = 5.0
    assert limiter.expired() == []  # the window has not ended
    clock.now = 10.0
    (summary,) = limiter.expired()
    assert (summary.kind, summary.count, summary.last) == ("a", 7, 9)
    assert limiter.expired() == []  # reported once


def test_a_steady_flood_shows_as_one_count_per_window() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=2, window=10.0, clock=clock)
    for _ in range(5):
        limiter.allow("a")
    counts = []
    for second in range(1, 41):
        clock.now = float(second)
        assert limiter.allow("a") is False, second
        counts += [s.count for s in limiter.expired()]
    # 3 + 9 held back in the first window, then one count per 10 s while the flood goes on.
    assert counts == [12, 10, 10, 10]
    assert [s.count for s in limiter.pending()] == [1]  # the one at t = 40 s


def test_a_quiet_window_gives_the_kind_its_burst_back() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=1, window=10.0, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [True, False, False]
    clock.now = 10.0
    assert [s.count for s in limiter.expired()] == [2]
    clock.now = 25.0  # a whole window without any "a"
    assert limiter.allow("a") is True


def test_the_count_is_kept_when_the_next_item_closes_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=1, window=10.0, clock=clock)
    limiter.allow("a")
    limiter.allow("a", "held")
    clock.now = 11.0
    assert limiter.allow("a") is False  # the flood goes on: the new window starts full
    (summary,) = limiter.expired()
    assert (summary.count, summary.last) == (1, "held")


def test_rate_limiter_kinds_are_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=1, window=10.0, max_kinds=2, clock=clock)
    assert limiter.allow("a") and limiter.allow("b")
    assert limiter.allow("c") is True  # the overflow kind's first
    assert limiter.allow("d") is False  # shares the overflow kind's budget
    assert len(limiter._windows) == 3
    clock.now = 20.0
    assert limiter.allow("e") is True  # quiet kinds were forgotten to make room
    assert len(limiter.pending()) == 1


def test_pending_reports_everything_held_back() -> None:
    limiter = RateLimiter(burst=1, window=60.0, clock=Clock())
    for kind in ("a", "a", "b", "b", "b"):
        limiter.allow(kind)
    assert sorted((s.kind, s.count) for s in limiter.pending()) == [("a", 1), ("b", 2)]
    assert limiter.pending() == []


# --- records ---------------------------------------------------------------------------------
def test_clean_text_escapes_control_characters_and_cuts() -> None:
    assert clean_text("a\x1b[2Jb\x00\tc\nd") == "a\\x1b[2Jb\\x00\tc\nd"
    cut = clean_text("x" * 50, limit=10)
    assert cut.startswith("x" * 10 + "...") and "40 more" in cut


@pytest.fixture
def private_logger() -> logging.Logger:
    """A logger outside logging's tree: pytest attaches none of its handlers to it."""
    return logging.Logger("ddsp_pd.tests.private", logging.DEBUG)


def test_a_full_queue_drops_and_counts_instead_of_waiting(private_logger) -> None:
    handler = DroppingQueueHandler(maxsize=3)
    private_logger.addHandler(handler)
    for i in range(10):
        private_logger.info("line %d", i)
    assert handler.queue.qsize() == 3
    assert handler.dropped == 7
    assert handler.queue.get_nowait().getMessage() == "line 0"


def test_a_broken_log_call_is_counted_not_printed(private_logger, capfd) -> None:
    handler = DroppingQueueHandler()
    private_logger.addHandler(handler)
    private_logger.info("%d frames", "not a number")
    assert handler.failed == 1
    assert capfd.readouterr().err == ""


def test_queued_messages_are_cleaned(private_logger) -> None:
    handler = DroppingQueueHandler()
    private_logger.addHandler(handler)
    private_logger.warning("unknown address %s", "/a\x1b]0;pwned\x07")
    assert handler.queue.get_nowait().getMessage() == "unknown address /a\\x1b]0;pwned\\x07"


def test_python_osc_warnings_with_raw_bytes_are_dropped(private_logger) -> None:
    payloads = LibraryPayloadFilter()
    seen: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = seen.append  # type: ignore[method-assign]
    catcher.addFilter(payloads)
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        # A bundle whose element is well-sized but neither a message nor a bundle: python-osc
        # warns on the root logger, quoting the element's bytes.
        OscPacket(b"#bundle\0" + bytes(8) + (8).to_bytes(4, "big") + b"\x01secret!")
        logging.getLogger("ddsp_pd.server.osc").warning("our own line")
    finally:
        root.removeHandler(catcher)
    assert payloads.dropped >= 1
    assert [r.getMessage() for r in seen] == ["our own line"]


# --- the writer --------------------------------------------------------------------------------
class BlockedSink:
    """A stderr nobody reads: every write waits until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.entered.set()
        self.release.wait()
        self.lines.append(text)


def test_a_blocked_sink_blocks_no_logging_thread(private_logger) -> None:
    sink = BlockedSink()
    handler = DroppingQueueHandler(maxsize=50)
    private_logger.addHandler(handler)
    writer = LogWriter(handler, RateLimiter(burst=10**9), sink)
    writer.start()
    try:
        private_logger.info("the first line, which the writer blocks on")
        assert sink.entered.wait(WAIT_S)

        def flood(thread: int) -> None:
            for i in range(2000):
                private_logger.info("thread %d line %d", thread, i)

        threads = [threading.Thread(target=flood, args=(t,), daemon=True) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        assert not any(t.is_alive() for t in threads), "a logging thread blocked"
        assert handler.dropped == 4 * 2000 - 50
        assert writer.stop(timeout=0.2) is False  # gives up on the blocked sink
    finally:
        sink.release.set()
        writer.join(WAIT_S)
    assert not writer.is_alive()
    written = "".join(sink.lines)
    assert f"{4 * 2000 - 50} log lines dropped" in written


def test_the_writer_reports_what_the_rate_limit_held_back(private_logger) -> None:
    clock = Clock()
    limiter = RateLimiter(burst=2, window=10.0, clock=clock)
    handler = DroppingQueueHandler()
    handler.addFilter(logs.RateLimitFilter(limiter))
    private_logger.addHandler(handler)
    lines: list[str] = []
    writer = LogWriter(handler, limiter, lines.append)
    writer.start()
    for size in range(100, 110):
        private_logger.info("error osc: undecodable datagram of %d bytes", size)
    private_logger.info("a different line")
    clock.now = 10.0
    assert writer.stop(WAIT_S)
    assert len(lines) == 4, lines
    assert "of 100 bytes" in lines[0] and "of 101 bytes" in lines[1]
    assert "a different line" in lines[2]
    assert "... and 8 more like it (the last: error osc: undecodable datagram of 109" in lines[3]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)


def test_stream_sink_writes_through_the_descriptor_or_the_stream() -> None:
    text = io.StringIO()
    stream_sink(text)("one\n")
    assert text.getvalue() == "one\n"
    read, write = os.pipe()
    with os.fdopen(write, "w", encoding="utf-8") as stream, os.fdopen(read, "rb") as pipe:
        stream_sink(stream)("zwei \u00fcber\n")
        stream.close()
        assert pipe.read() == "zwei \u00fcber\n".encode()


# --- installed on the root logger ------------------------------------------------------------
def test_background_log_installs_and_restores(capfd) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, threading.excepthook)
    lines: list[str] = []
    installed = BackgroundLog(logging.INFO, lines.append).install()
    try:
        logging.getLogger("ddsp_pd.tests").info("hello %s", "there")
        logging.getLogger("ddsp_pd.tests").debug("not at info")
        crash = threading.Thread(target=lambda: 1 / 0, name="doomed")
        crash.start()
        crash.join(WAIT_S)
    finally:
        assert installed.close(WAIT_S)
    assert (list(root.handlers), root.level, threading.excepthook) == before
    text = "".join(lines)
    assert "INFO ddsp_pd.tests: hello there" in text
    assert "not at info" not in text
    assert "ERROR ddsp_pd.threads: unexpected error in doomed" in text
    assert "ZeroDivisionError" in text
    assert capfd.readouterr().err == ""  # the crash went to the log, not to stderr


def test_configure_replaces_an_earlier_configuration() -> None:
    first, second = io.StringIO(), io.StringIO()
    one = logs.configure("info", first)
    two = logs.configure("warning", second)
    try:
        assert one._closed and one.handler not in logging.getLogger().handlers
        logging.getLogger("ddsp_pd.tests").warning("only once")
    finally:
        two()
    assert first.getvalue() == ""
    assert second.getvalue().count("only once") == 1
