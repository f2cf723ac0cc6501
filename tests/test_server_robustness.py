"""Bad input of every kind gets ``/ddsp/error`` with the right code, and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from test_server_support import OscClient, build, running_service, settle, write_tone


@pytest.fixture
def served(tmp_path: Path):
    with running_service(tmp_path) as (service, client, engine):
        wav = write_tone(tmp_path / "in.wav")
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
        yield service, client, engine, tmp_path


def expect_error(client: OscClient, data: bytes, code: str) -> str:
    """Send raw bytes, return the error message; fail unless the code is ``code``."""
    start = client.mark()
    client.send_raw(data)
    error = client.wait_for("/ddsp/error", start)
    assert error.types == "ss"
    assert error.args[0] == code, error.args
    assert error.size <= 2048
    return error.args[1]


HUGE = "x" * 60000

BAD_MESSAGES = [
    # (datagram, expected code)
    (build("/ddsp/octave", "two"), "osc"),
    (build("/ddsp/octave", True), "osc"),
    (build("/ddsp/octave", b"\x01\x02"), "osc"),
    (build("/ddsp/octave", None), "osc"),
    (build("/ddsp/octave"), "osc"),
    (build("/ddsp/octave", 1.0, 2.0), "osc"),
    (build("/ddsp/octave", 9.0), "control"),
    (build("/ddsp/octave", float("nan")), "control"),
    (build("/ddsp/octave", float("inf")), "control"),
    (build("/ddsp/confidence", -0.1), "control"),
    (build("/ddsp/loudness", 61), "control"),
    (build("/ddsp/quiet", 100.5), "control"),
    (build("/ddsp/autotune", 2.0), "control"),
    (build("/ddsp/note_threshold", 11.0), "control"),
    (build("/ddsp/samplerate", 7999), "control"),
    (build("/ddsp/samplerate", 44100.5), "control"),
    (build("/ddsp/adjust", 2), "control"),
    (build("/ddsp/normalize", -1), "control"),
    (build("/ddsp/auto", 0.5), "control"),
    (build("/ddsp/seed", -1), "control"),
    (build("/ddsp/seed", 1.5), "control"),
    (build("/ddsp/hello"), "osc"),
    (build("/ddsp/hello", 0), "osc"),
    (build("/ddsp/hello", 70000), "osc"),
    (build("/ddsp/hello", "9001"), "osc"),
    (build("/ddsp/ping", 1), "osc"),
    (build("/ddsp/render", "now"), "osc"),
    (build("/ddsp/input", 3), "osc"),
    (build("/ddsp/input"), "osc"),
    (build("/ddsp/checkpoint", 1.0), "osc"),
    (build("/ddsp/nonsense"), "osc"),
    (build("/ddsp"), "osc"),
    (build("/ddsp/pong"), "osc"),
    (build("/" + HUGE), "osc"),
    (build("/ddsp/input", HUGE), "input"),
    (build("/ddsp/checkpoint", HUGE), "checkpoint"),
    (build("/ddsp/octave", HUGE), "osc"),
    (b"", "osc"),
    (b"\x00\x01\x02\x03", "osc"),
    (b"ddsp/ping\x00\x00\x00", "osc"),  # no leading slash
    (b"#bundle\x00" + b"\xff" * 5, "osc"),
    (build("/ddsp/octave", 1.0)[:-6], "osc"),  # truncated inside the type tags
    (np.random.default_rng(1).bytes(3000), "osc"),
]


def test_bad_messages_get_errors_and_change_nothing(served) -> None:
    service, client, _, _ = served
    before = client.status()
    for data, code in BAD_MESSAGES:
        message = expect_error(client, data, code)
        assert message and len(message.encode()) <= 900
    assert client.status() == before
    settle(service, client)
    assert client.since(0, "/ddsp/done") == []


def test_error_messages_name_the_problem(served) -> None:
    _, client, _, _ = served
    message = expect_error(client, build("/ddsp/octave", 9.0), "control")
    assert "octave" in message and "9" in message
    message = expect_error(client, build("/ddsp/nonsense"), "osc")
    assert "/ddsp/nonsense" in message
    message = expect_error(client, build("/ddsp/quiet", 1.0, 2.0), "osc")
    assert "/ddsp/quiet" in message and "2" in message


def test_other_argument_types_are_refused(served) -> None:
    _, client, _, _ = served
    for arg_type, value in [
        (OscMessageBuilder.ARG_TYPE_DOUBLE, 1.0),
        (OscMessageBuilder.ARG_TYPE_INT64, 1),
    ]:
        builder = OscMessageBuilder("/ddsp/octave")
        builder.add_arg(value, arg_type)
        # 'd' and 'h' are numbers: accepted like f and i (Pd never sends them).
        start = client.mark()
        client.send_raw(builder.build().dgram)
        assert client.wait_for("/ddsp/state", start).args == ["octave", 1.0]
    for arg_type, value in [
        (OscMessageBuilder.ARG_TYPE_RGBA, 0x01020304),
        (OscMessageBuilder.ARG_TYPE_MIDI, (1, 2, 3, 4)),
    ]:
        builder = OscMessageBuilder("/ddsp/octave")
        builder.add_arg(value, arg_type)
        expect_error(client, builder.build().dgram, "osc")


def test_bundles_are_unpacked(served) -> None:
    _, client, _, _ = served
    bundle = OscBundleBuilder(IMMEDIATELY)
    for value in (0.5, 1.5):
        msg = OscMessageBuilder("/ddsp/octave")
        msg.add_arg(value, OscMessageBuilder.ARG_TYPE_FLOAT)
        bundle.add_content(msg.build())
    start = client.mark()
    client.send_raw(bundle.build().dgram)
    client.wait_for("/ddsp/state", start, where=lambda r: r.args == ["octave", 1.5])
    assert [r.args[1] for r in client.since(start, "/ddsp/state")] == [0.5, 1.5]


def test_bad_input_files(served) -> None:
    _, client, _, tmp = served
    before = client.status()
    text = tmp / "notes.txt"
    text.write_text("not audio at all\n" * 100)
    empty = tmp / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    truncated = tmp / "truncated.wav"
    truncated.write_bytes((tmp / "in.wav").read_bytes()[:20])
    cases = [
        *(str(p) for p in (tmp / "missing.wav", tmp, text, empty, truncated)),
        *("", "a\0b", "~no_such_user_here/in.wav"),
    ]
    for path in cases:
        message = expect_error(client, build("/ddsp/input", path), "input")
        assert message
    assert client.status() == before


def test_silent_input_fails_at_render_and_keeps_serving(served) -> None:
    _, client, _, tmp = served
    silent = tmp / "silent.wav"
    sf.write(str(silent), np.zeros(8000, np.float32), 16000)
    client.request("/ddsp/input", str(silent), reply="/ddsp/state")
    error = client.request("/ddsp/render", reply="/ddsp/error")
    assert error.args[0] == "input" and "silent" in error.args[1]
    error = client.request("/ddsp/features", reply="/ddsp/error")
    assert error.args[0] == "input"
    client.request("/ddsp/input", str(tmp / "in.wav"), reply="/ddsp/state")
    client.request("/ddsp/render", reply="/ddsp/done")


def test_bad_checkpoints_keep_the_loaded_one(served) -> None:
    service, client, _, tmp = served
    ckpts = tmp / "checkpoints"
    (ckpts / "broken").mkdir()
    (ckpts / "broken" / "ckpt-1.index").write_bytes(b"")
    (ckpts / "broken" / "corrupt").write_bytes(b"")
    (ckpts / "buggy").mkdir()
    (ckpts / "buggy" / "ckpt-1.index").write_bytes(b"")
    (ckpts / "buggy" / "explode").write_bytes(b"")
    before = client.status()
    message = expect_error(client, build("/ddsp/checkpoint", "no_such_model"), "checkpoint")
    assert "no_such_model" in message
    message = expect_error(client, build("/ddsp/checkpoint", "broken"), "checkpoint")
    assert "corrupt" in message
    message = expect_error(client, build("/ddsp/checkpoint", "buggy"), "internal")
    assert "simulated bug" in message
    expect_error(client, build("/ddsp/checkpoint", "a\0b"), "checkpoint")
    expect_error(client, build("/ddsp/checkpoint", "~no_such_user_here/x"), "checkpoint")
    assert client.status() == before
    client.request("/ddsp/render", reply="/ddsp/done")
    settle(service, client)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_hello_to_the_server_port_is_refused(tmp_path: Path, host: str) -> None:
    # Off loopback the server needs --allow (docs/osc.md, "Access").
    with running_service(tmp_path, host=host, allow=["127.0.0.0/8"]) as (service, client, _):
        _no_reply_loop(service, client)


def _no_reply_loop(service, client: OscClient) -> None:
    port = service.address[1]
    expect_error(client, build("/ddsp/hello", port), "osc")
    client.ping()
    # Its own replies, were they to come back, are never answered (no reply loop).
    received = service.dispatcher.received
    service.handlers.send(("127.0.0.1", port), "/ddsp/pong")
    deadline = time.monotonic() + 5.0
    while service.dispatcher.received < received + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.ping()
    # The pong it sent itself and the client's ping: nothing more (an answer would loop).
    assert service.dispatcher.received == received + 2


def test_undecodable_replies_never_sent(served) -> None:
    _, client, _, _ = served
    for data, _code in BAD_MESSAGES[:10]:
        client.send_raw(data)
    client.ping()
    assert client.undecodable == 0


def test_input_path_longer_than_pd_symbols_is_refused(served) -> None:
    _, client, _, tmp = served
    # A real audio file whose path (over 900 bytes) could not come back whole in a reply.
    deep = tmp
    while len(str(deep)) < 920:
        deep = deep / "folder_with_a_long_name"
    try:
        deep.mkdir(parents=True)
        (deep / "in.wav").write_bytes((tmp / "in.wav").read_bytes())
    except OSError:
        pytest.skip("the file system refuses the long path")
    before = client.status()
    message = expect_error(client, build("/ddsp/input", str(deep / "in.wav")), "input")
    assert "too long" in message
    assert client.status() == before
