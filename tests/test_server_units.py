"""The server's parts on their own: settings, reply encoding and pacing, the output folder."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage

from ddsp_pd.errors import ControlError, OutputError
from ddsp_pd.server.osc import as_port, decode, type_tags
from ddsp_pd.server.outputs import OutputFolder
from ddsp_pd.server.replies import ReplySender, encode
from ddsp_pd.server.state import SETTINGS, OscError, ServerState, truncate_utf8


# --- settings ----------------------------------------------------------------------------------
def test_integer_settings_take_integral_floats_only() -> None:
    seed = SETTINGS["seed"]
    assert seed.coerce(7.0) == 7 and isinstance(seed.coerce(7.0), int)
    with pytest.raises(ControlError):
        seed.coerce(7.5)
    assert SETTINGS["samplerate"].coerce(0.0) == 0  # the input's rate
    assert SETTINGS["samplerate"].coerce(48000.0) == 48000
    with pytest.raises(ControlError):
        SETTINGS["samplerate"].coerce(100)


def test_float_settings_take_ints_and_refuse_other_types() -> None:
    octave = SETTINGS["octave"]
    assert octave.coerce(2) == 2.0 and isinstance(octave.coerce(2), float)
    for bad in ("1", True, b"\x00", None):
        with pytest.raises(OscError):
            octave.coerce(bad)
    for bad in (float("nan"), float("inf"), 4.001, -4.001):
        with pytest.raises(ControlError):
            octave.coerce(bad)


def test_bool_settings_take_zero_or_one() -> None:
    for key in ("adjust", "normalize", "auto"):
        assert SETTINGS[key].coerce(1.0) == 1
        assert SETTINGS[key].coerce(0) == 0
        with pytest.raises(ControlError):
            SETTINGS[key].coerce(2)


def test_state_params_follow_the_settings() -> None:
    state = ServerState()
    assert state.params().samplerate is None  # 0 = the input's rate
    assert state.set("samplerate", 22050) is True
    assert state.set("samplerate", 22050) is False
    params = state.params()
    assert params.samplerate == 22050 and params.adjust is True and params.normalize is True
    keys = [k for k, _ in state.status_items()]
    assert keys == ["input", "checkpoint", *SETTINGS]


def test_port_converter() -> None:
    assert as_port("/ddsp/hello", 9001.0) == 9001
    for bad in (0, 65536, 1.5, "9001", True):
        with pytest.raises(OscError):
            as_port("/ddsp/hello", bad)


# --- encoding -----------------------------------------------------------------------------------
def test_encode_uses_only_int_float_string() -> None:
    data = encode("/x", (True, np.float32(0.5), np.int64(3), 2**40, float("nan"), "s", Path("/p")))
    assert type_tags(data) == "ififfss"
    msg = OscMessage(data)
    assert msg.params[0] == 1 and msg.params[1] == 0.5 and msg.params[2] == 3
    assert msg.params[3] == pytest.approx(2**40) and msg.params[4] == 0.0


def test_long_strings_are_cut_on_a_character_boundary() -> None:
    text = "é" * 2000  # two bytes each
    cut = truncate_utf8(text, 900)
    assert len(cut.encode()) <= 900 and cut.endswith("...")
    data = encode("/ddsp/error", ("osc", text))
    assert len(data) < 1024
    assert OscMessage(data).params[1] == cut


def test_decode_reports_tags_and_refuses_junk() -> None:
    data = encode("/ddsp/octave", (1.5,))
    assert decode(data) == [("/ddsp/octave", "f", [1.5])]
    for junk in (b"", b"abc", b"#bundle\x00\x01", os.urandom(33)):
        with pytest.raises(OscError):
            decode(junk)


def test_reply_sender_spaces_out_bursts() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5.0)
    sender_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = ReplySender(sender_sock, rate=1000.0, burst=50)
    sender.start()
    try:
        started = time.monotonic()
        for i in range(250):
            sender.send(receiver.getsockname(), "/n", i)
        got = [OscMessage(receiver.recv(1024)).params[0] for _ in range(250)]
        elapsed = time.monotonic() - started
    finally:
        sender.stop()
        sender_sock.close()
        receiver.close()
    assert got == list(range(250))  # in order, none lost
    # 50 may go at once, the other 200 at 1000/s: at least 0.2 s (a lower bound, not speed).
    assert elapsed >= 0.19


# --- output folder ------------------------------------------------------------------------------
def test_output_folder_writes_float_wavs_and_prunes_only_its_own(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out", keep=2)
    folder.prepare()
    foreign = tmp_path / "out" / "render-mine.wav"
    foreign.write_bytes(b"user file")
    stale = tmp_path / "out" / ".render-20200101-000000-000-1-0001.wav.1.abcdef01.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    folder.prepare()
    assert not stale.exists()
    audio = np.linspace(-1.5, 1.5, 100, dtype=np.float32)  # float keeps values beyond 1
    paths = []
    for _ in range(4):
        paths.append(folder.write("render", audio, 8000))
        time.sleep(0.002)  # distinct modification times
    features = folder.write("features", np.zeros((10, 6), np.float32), 250)
    assert sorted(folder.results("render")) == sorted(paths[-2:])
    assert folder.results("features") == [features]
    assert foreign.exists()
    data, rate = sf.read(paths[-1], dtype="float32")
    assert rate == 8000 and sf.info(paths[-1]).subtype == "FLOAT"
    np.testing.assert_array_equal(data, audio)
    assert len({p.name for p in paths}) == 4


def test_output_folder_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        OutputFolder(tmp_path, keep=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        OutputFolder(blocker / "sub").prepare()
    with pytest.raises(OutputError):
        OutputFolder(tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200) / ("g" * 200)).prepare()
