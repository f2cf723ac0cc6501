"""Off loopback only allowed senders are served; client paths stay inside the roots
(docs/osc.md, "Access")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_server_support import (
    FakeEngine,
    OscClient,
    build,
    make_checkpoints,
    running_service,
    write_tone,
)

from ddsp_pd.cli import main
from ddsp_pd.server.access import PathRoots, is_loopback


# --- the command ---------------------------------------------------------------------------------
@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run ``serve`` with the fake engine; the serving loop only starts and stops."""
    import ddsp_pd.commands.serve as serve_command
    import ddsp_pd.server.app as app

    make_checkpoints(tmp_path / "checkpoints")
    engines: list[FakeEngine] = []

    def make_engine(tracker, dirs, precision="exact") -> FakeEngine:
        engines.append(FakeEngine())
        return engines[-1]

    def serve_once(service) -> None:
        service.start()
        service.stop()

    monkeypatch.setattr(serve_command, "_make_engine", make_engine)
    monkeypatch.setattr(app, "serve_until_signal", serve_once)

    def run(*args: str):
        base = ["--port", "0", "-c", "alpha", "--checkpoint-dir", str(tmp_path / "checkpoints"),
                "--output-dir", str(tmp_path / "out")]  # fmt: skip
        return CliRunner().invoke(main, ["serve", *base, *args]), engines

    return run


def test_listening_off_loopback_needs_allow(serve) -> None:
    result, engines = serve("--host", "0.0.0.0")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--allow" in lines[0], result.output
    assert engines == []  # refused before the engine (and TensorFlow) is made


def test_allow_takes_only_networks(serve) -> None:
    result, _ = serve("--host", "0.0.0.0", "--allow", "not-a-network")
    assert result.exit_code == 2
    assert "not-a-network" in result.output


def test_listening_off_loopback_with_allow_warns(serve) -> None:
    result, _ = serve("--host", "0.0.0.0", "--allow", "127.0.0.1/32")
    assert result.exit_code == 0, result.output
    assert "warning: listening off loopback" in result.stderr
    assert "127.0.0.1/32" in result.stderr and "listening on udp 0.0.0.0" in result.stdout
    # Loopback (by address or by name) needs no --allow and gets no warning.
    result, _ = serve("--host", "localhost")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_help_explains_allow_and_roots() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--allow" in text and "--root" in text
    assert "on loopback any path" in text and "off loopback your home folder" in text


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.1.2.3")


# --- senders ---------------------------------------------------------------------------------
def _outsider_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.2", 0))
    except OSError:
        sock.close()
        pytest.skip("cannot bind 127.0.0.2 here")
    sock.settimeout(0.5)
    return sock


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_only_allowed_senders_are_served(tmp_path: Path, host: str) -> None:
    outsider = _outsider_socket()
    try:
        with running_service(tmp_path, host=host, allow=["127.0.0.1/32"]) as (service, client, _):
            port = service.address[1]
            for data in (build("/ddsp/ping"), build("/ddsp/hello", outsider.getsockname()[1]),
                         build("/ddsp/nonsense"), b"junk"):  # fmt: skip
                outsider.sendto(data, ("127.0.0.1", port))
            # The server reads in order: once the allowed client is answered, the outsider's
            # datagrams have been read too, and dropped.
            client.ping()
            client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
            assert service.dropped()["datagrams from outside --allow"] == 4
            assert len(service.handlers.clients) == 0
            with pytest.raises(TimeoutError):
                outsider.recv(65536)
    finally:
        outsider.close()


# --- roots ------------------------------------------------------------------------------------
def _input_error(client: OscClient, path: str) -> str:
    start = client.mark()
    client.send("/ddsp/input", path)
    reply = client.wait_for("/ddsp/error", start)
    assert reply.args[0] == "input", reply.args
    return reply.args[1]


def _same_answer(message: str, path: str) -> str:
    assert path in message
    return message.replace(path, "PATH")


def test_input_outside_the_roots_answers_like_a_missing_file(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    inside_wav = write_tone(allowed / "in.wav")
    secret = write_tone(outside / "secret.wav")
    (allowed / "escape.wav").symlink_to(secret)
    (allowed / "alias.wav").symlink_to(inside_wav)
    (allowed / "notes.txt").write_text("not audio\n")
    (outside / "notes.txt").write_text("not audio\n")
    with running_service(tmp_path, roots=[allowed]) as (_, client, _engine):
        refused = [
            str(secret),
            str(outside / "missing.wav"),
            str(outside / "notes.txt"),
            str(outside),
            str(allowed / "missing.wav"),
            str(allowed / "escape.wav"),
            str(allowed / ".." / "outside" / "secret.wav"),
            str(allowed / "sub" / ".." / ".." / "outside" / "secret.wav"),
            "/etc/passwd",
        ]
        answers = {_same_answer(_input_error(client, path), path) for path in refused}
        assert answers == {"cannot use input file: PATH (not found or not allowed)"}
        # Inside the roots: accepted (as the resolved path), with helpful errors otherwise.
        reply = client.request("/ddsp/input", str(allowed / "alias.wav"), reply="/ddsp/state")
        assert reply.args == ["input", str(inside_wav.resolve())]
        assert "not a readable audio file" in _input_error(client, str(allowed / "notes.txt"))
        assert "not a file" in _input_error(client, str(allowed / "sub"))
        # The checkpoint and output folders count as roots: a result can be the next input.
        done = client.request("/ddsp/render", reply="/ddsp/done")
        client.request("/ddsp/input", done.args[0], reply="/ddsp/state")
        assert client.status()["input"] == done.args[0]


def test_checkpoint_outside_the_roots_answers_like_a_missing_one(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    make_checkpoints(outside, ("gamma", "delta"))
    make_checkpoints(allowed, ("epsilon",))
    ckpts = make_checkpoints(tmp_path / "checkpoints")
    (ckpts / "linked").symlink_to(outside / "delta")  # listed, though it leads outside
    with running_service(tmp_path, roots=[allowed]) as (_, client, _engine):

        def refused(raw: str) -> str:
            error = client.request("/ddsp/checkpoint", raw, reply="/ddsp/error")
            assert error.args[0] == "checkpoint", error.args
            return _same_answer(error.args[1], raw)

        answers = {
            refused(raw)
            for raw in (
                str(outside / "gamma"),
                str(outside / "missing"),
                str(allowed / ".." / "outside" / "gamma"),
                "no_such_name",
            )
        }
        assert len(answers) == 1, answers
        # Names and paths that the checkpoint folders list, and paths in the roots, load.
        for raw, name in [
            ("beta", "beta"),
            ("linked", "delta"),
            (str(ckpts / "linked"), "delta"),
            (str(ckpts / "alpha"), "alpha"),
            (str(allowed / "epsilon"), "epsilon"),
        ]:
            loaded = client.request("/ddsp/checkpoint", raw, reply="/ddsp/loaded")
            assert loaded.args[0] == name, raw


def test_off_loopback_the_default_root_is_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    at_home = write_tone(home / "take.wav")
    elsewhere = write_tone(tmp_path / "elsewhere.wav")
    with running_service(tmp_path, host="0.0.0.0", allow=["127.0.0.1"]) as (service, client, _):
        assert service.roots is not None and service.roots.contains(home.resolve())
        assert "not allowed" in _input_error(client, str(elsewhere))
        client.request("/ddsp/input", str(at_home), reply="/ddsp/state")
        client.request("/ddsp/checkpoint", "beta", reply="/ddsp/loaded")


def test_on_loopback_any_path_is_used_without_roots(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "anywhere.wav")
    with running_service(tmp_path) as (service, client, _):
        assert service.roots is None
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        missing = str(tmp_path / "missing.wav")
        assert _input_error(client, missing) == (
            f"cannot use input file: {missing} (not found or not allowed)"
        )


def test_path_roots_resolve_before_comparing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "rootless").mkdir()
    roots = PathRoots([root])
    assert roots.resolve(root / "a" / ".." / "x.wav") == (root / "x.wav").resolve()
    assert roots.resolve(root / ".." / "rootless" / "x.wav") is None
    assert roots.resolve(tmp_path / "rootless") is None  # a shared prefix is not inside
    (root / "out").symlink_to(tmp_path / "rootless")
    assert roots.resolve(root / "out" / "x.wav") is None
