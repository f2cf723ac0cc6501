"""``ddsp-pd serve`` with a stderr nobody reads survives a flood of junk and of renders.

A launcher that never drains the server's stderr (a GUI, a Pd-side launcher, some service
managers) must not be able to stop it: once the pipe's buffer is full, no log write may
block the receiving, replying or rendering threads, and SIGTERM must still end it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server_cli import ServeProcess
from test_server_support import OscClient, write_tone

from ddsp_pd.catalog import DEFAULT_NAME, default_checkpoint_dirs

JUNK_DATAGRAMS = 20_000
RENDERS = 500
#: Junk sent between two pings; a ping's answer proves the server kept up with the batch.
JUNK_BATCH = 250
#: Generous bounds: they only turn a hang into a failure.
STEP_TIMEOUT = 30.0
PING_TIMEOUT = 1.0
#: The log at the end may hold start-up chatter and summaries, but no line per datagram/render.
MAX_LOG_LINES = 300


class QuietServe(ServeProcess):
    """``ddsp-pd serve`` whose stderr is a pipe that nobody reads until the process ended."""

    def _read_stderr(self) -> None:
        return

    def stderr_at_end(self) -> list[str]:
        assert self.proc.poll() is not None and self.proc.stderr is not None
        return self.proc.stderr.read().splitlines()


@pytest.fixture
def quiet_serve() -> Iterator[list[QuietServe]]:
    started: list[QuietServe] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


def junk_datagrams(count: int, seed: int = 9) -> Iterator[bytes]:
    """Random bytes, and ``#bundle`` headers followed by garbage elements.

    Some bundles carry well-sized elements that are neither messages nor bundles: python-osc
    logs those with their raw bytes on the root logger.
    """
    rng = random.Random(seed)
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield rng.randbytes(rng.randint(1, 200))
        elif kind == 1:
            garbage = rng.randbytes(rng.randint(0, 120))
            yield b"#bundle\0" + rng.randbytes(8) + garbage
        else:
            element = b"\x01" + rng.randbytes(4 * rng.randint(1, 20) - 1)
            yield b"#bundle\0" + rng.randbytes(8) + struct.pack(">i", len(element)) + element


def default_model_available() -> bool:
    return any((folder / DEFAULT_NAME).is_dir() for folder in default_checkpoint_dirs())


@pytest.mark.slow
@pytest.mark.skipif(not default_model_available(), reason="the default checkpoint is not present")
def test_unread_stderr_never_stops_the_server(quiet_serve, tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "in.wav", seconds=0.2)
    process = QuietServe(["--port", "0", "--output-dir", str(tmp_path / "out")])
    quiet_serve.append(process)
    server = process.wait_listening()
    client = OscClient(server)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        junk.bind(("127.0.0.1", 0))
        client.ping(timeout=STEP_TIMEOUT)
        for index, datagram in enumerate(junk_datagrams(JUNK_DATAGRAMS), 1):
            junk.sendto(datagram, server)
            if index % JUNK_BATCH == 0:
                client.ping(timeout=STEP_TIMEOUT)
        client.request("/ddsp/input", str(wav), reply="/ddsp/state", timeout=STEP_TIMEOUT)
        for _ in range(RENDERS):
            start = client.mark()
            client.send("/ddsp/render")
            client.wait_for("/ddsp/done", start, timeout=STEP_TIMEOUT)
        time.sleep(0.2)  # let the last render's log lines reach the full pipe
        client.ping(timeout=PING_TIMEOUT)
    finally:
        client.close()
        junk.close()
    assert process.stop(signal.SIGTERM) == 0
    lines = process.stderr_at_end()
    assert len(lines) < MAX_LOG_LINES, [*lines[:20], "...", *lines[-20:]]
    assert not any("Traceback" in line for line in lines), lines[-40:]
    # python-osc's warnings quote the datagram's bytes; none may reach the log.
    assert not any("dgram" in line or "Could not" in line for line in lines), lines[:40]


def fill_stderr_pipe(pid: int) -> int:
    """Fill the pipe behind process ``pid``'s stderr until a write would block; bytes written.

    Opens the pipe anew through /proc, so the non-blocking flag is this test's own and the
    server's descriptor stays blocking.
    """
    fd = os.open(f"/proc/{pid}/fd/2", os.O_WRONLY | os.O_NONBLOCK)
    written = 0
    try:
        while True:
            written += os.write(fd, b"#" * 1023 + b"\n")
    except BlockingIOError:
        return written
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fills the pipe through /proc")
@pytest.mark.skipif(not default_model_available(), reason="the default checkpoint is not present")
def test_a_full_stderr_pipe_blocks_nothing_and_sigterm_still_stops(
    quiet_serve, tmp_path: Path
) -> None:
    wav = write_tone(tmp_path / "in.wav", seconds=0.2)
    process = QuietServe(["--port", "0", "--output-dir", str(tmp_path / "out")])
    quiet_serve.append(process)
    server = process.wait_listening()
    client = OscClient(server)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        junk.bind(("127.0.0.1", 0))
        client.ping(timeout=STEP_TIMEOUT)
        assert fill_stderr_pipe(process.proc.pid) > 0
        # From here on every write to the server's stderr blocks until the end of the test.
        for index, datagram in enumerate(junk_datagrams(2000, seed=8), 1):
            junk.sendto(datagram, server)
            if index % JUNK_BATCH == 0:
                client.ping(timeout=STEP_TIMEOUT)
        client.request("/ddsp/input", str(wav), reply="/ddsp/state", timeout=STEP_TIMEOUT)
        for _ in range(20):
            start = client.mark()
            client.send("/ddsp/render")
            client.wait_for("/ddsp/done", start, timeout=STEP_TIMEOUT)
        client.send("/ddsp/checkpoint", "no_such_model")  # an error, logged at INFO
        client.ping(timeout=PING_TIMEOUT)
    finally:
        client.close()
        junk.close()
    assert process.stop(signal.SIGTERM) == 0
    lines = [line for line in process.stderr_at_end() if line.strip("#")]
    assert len(lines) < MAX_LOG_LINES, [*lines[:20], "...", *lines[-20:]]
