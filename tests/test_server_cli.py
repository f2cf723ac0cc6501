"""``ddsp-pd serve`` as a user runs it: options, start-up lines, signals, exit status."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REFERENCE_CHECKPOINT, needs_fixtures
from test_server_support import (
    FakeEngine,
    OscClient,
    make_checkpoints,
    write_tone,
)

from ddsp_pd.cli import main
from ddsp_pd.server.app import OscService, ServerConfig

START_TIMEOUT = 120.0  # TensorFlow's import on a busy 2-core machine
LISTENING = re.compile(r"listening on udp ([0-9.]+):(\d+)")


def test_serve_help_lists_the_options() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in (
        "--host", "--port", "--checkpoint", "--checkpoint-dir", "--output-dir", "--keep",
        "--tracker", "--log-level",
    ):  # fmt: skip
        assert option in result.output


class ServeProcess:
    """``ddsp-pd serve`` in a subprocess, with its output collected on threads."""

    def __init__(self, args: list[str]) -> None:
        code = "import sys; from ddsp_pd.cli import main; sys.exit(main())"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._listening = threading.Event()
        self.address: tuple[str, int] | None = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            match = LISTENING.search(line)
            if match:
                self.address = (match.group(1), int(match.group(2)))
                self._listening.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_listening(self) -> tuple[str, int]:
        if not self._listening.wait(START_TIMEOUT) or self.address is None:
            self.proc.kill()
            raise AssertionError(f"no 'listening' line; stdout {self.stdout} stderr {self.stderr}")
        return self.address

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


@pytest.fixture
def serve_process() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


@needs_fixtures
@pytest.mark.slow
def test_serve_process_starts_answers_and_stops_on_sigterm(serve_process, tmp_path: Path) -> None:
    process = ServeProcess(
        ["--port", "0", "-c", str(REFERENCE_CHECKPOINT), "--output-dir", str(tmp_path / "out")]
    )
    serve_process.append(process)
    host, port = process.wait_listening()
    assert host == "127.0.0.1"
    # The server prints the resolved path; shared/ may be reached through a link.
    assert any(str(REFERENCE_CHECKPOINT.resolve()) in line for line in process.stdout)
    client = OscClient((host, port))
    try:
        client.ping(timeout=30.0)
        client.request("/ddsp/hello", client.port, reply="/ddsp/ready")
    finally:
        client.close()
    assert process.stop(signal.SIGTERM) == 0
    assert not any("Traceback" in line for line in process.stderr)
    assert any("shutting down" in line for line in process.stderr)


# --- the command in this process, with the stand-in engine ----------------------------------------
@pytest.fixture
def fake_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run ``serve`` with the fake engine; the serving loop is replaced by ``interact``."""
    import ddsp_pd.commands.serve as serve_command
    import ddsp_pd.server.app as app

    make_checkpoints(tmp_path / "checkpoints")
    monkeypatch.setattr(
        serve_command, "_make_engine", lambda tracker, dirs, precision="exact": FakeEngine()
    )
    calls: dict[str, object] = {}

    def run(args: list[str], interact=None):
        def fake_serve(service) -> None:
            service.start()
            try:
                calls["state"] = interact(service) if interact else None
            finally:
                service.stop()

        monkeypatch.setattr(app, "serve_until_signal", fake_serve)
        base = ["--port", "0", "--checkpoint-dir", str(tmp_path / "checkpoints"),
                "--output-dir", str(tmp_path / "out")]  # fmt: skip
        result = CliRunner().invoke(main, ["serve", *base, *args])
        return result, calls.get("state")

    return run


def test_serve_prints_checkpoint_and_address(fake_command) -> None:
    def interact(service):
        client = OscClient(service.address)
        try:
            return client.request("/ddsp/hello", client.port, reply="/ddsp/ready").args
        finally:
            client.close()

    result, ready = fake_command(["-c", "beta", "--log-level", "debug"], interact)
    assert result.exit_code == 0, result.output
    assert "checkpoint beta (2.x, 16000 Hz)" in result.output
    assert re.search(r"listening on udp 127\.0\.0\.1:\d+", result.output)
    assert ready[1] == "beta"


def test_serve_without_a_default_checkpoint_still_serves(fake_command, tmp_path: Path) -> None:
    def interact(service):
        client = OscClient(service.address)
        try:
            client.request("/ddsp/input", str(write_tone(tmp_path / "in.wav")), reply="/ddsp/state")
            return client.request("/ddsp/render", reply="/ddsp/error").args
        finally:
            client.close()

    result, error = fake_command([], interact)
    assert result.exit_code == 0, result.output
    assert "no checkpoint loaded" in result.output and "no default checkpoint" in result.output
    assert error[0] == "checkpoint"


def test_serve_with_a_bad_checkpoint_exits_with_one_line(fake_command) -> None:
    result, _ = fake_command(["-c", "no_such_model"])
    assert result.exit_code == 1
    assert "no_such_model" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_serve_refuses_a_busy_port(fake_command) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result, _ = fake_command(["-c", "alpha", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_signals_stop_the_service(tmp_path: Path) -> None:
    from ddsp_pd.server.app import serve_until_signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        service = OscService(
            FakeEngine(),
            ServerConfig(port=0, output_dir=tmp_path / "out", checkpoint_dirs=[]),
        )
        answered: list[object] = []

        def poke(service=service, sig=sig, answered=answered) -> None:
            client = OscClient(service.address)
            try:
                answered.append(client.ping().address)
            finally:
                client.close()
                os.kill(os.getpid(), sig)

        timer = threading.Timer(0.2, poke)
        timer.start()
        serve_until_signal(service)  # returns once the signal arrived
        timer.join()
        assert answered == ["/ddsp/pong"]
        assert service._stopped
