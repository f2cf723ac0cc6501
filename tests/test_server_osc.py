"""Every address of docs/osc.md over real UDP, against the fast stand-in engine."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_server_support import (
    FRAME_RATE,
    FakeEngine,
    OscClient,
    dominant_frequency,
    is_close,
    running_service,
    settle,
    write_tone,
)

from ddsp_pd import __version__
from ddsp_pd.server.state import SETTINGS

# The defaults docs/osc.md promises ("default ..." in the request table); samplerate 0 = input's.
DOCUMENTED_DEFAULTS = {
    "octave": 0.0,
    "confidence": 0.2,
    "loudness": 0.0,
    "adjust": 1,
    "quiet": 20.0,
    "autotune": 0.0,
    "note_threshold": 1.0,
    "samplerate": 0,
    "normalize": 1,
    "seed": 0,
    "auto": 0,
}
# A valid value per control, different from its default.
NEW_VALUES = {
    "octave": -1.5,
    "confidence": 0.5,
    "loudness": 6.0,
    "adjust": 0,
    "quiet": 35.0,
    "autotune": 0.75,
    "note_threshold": 2.5,
    "samplerate": 44100,
    "normalize": 0,
    "seed": 1234,
    "auto": 1,
}
STAGES = ["load", "features", "controls", "model", "write"]


def assert_wellformed(client: OscClient) -> None:
    """Every reply so far has only i, f, s arguments and is far below 64 KB."""
    for reply in client.since(0):
        assert set(reply.types) <= set("ifs"), (reply.address, reply.types)
        assert reply.size <= 2048, (reply.address, reply.size)


@pytest.fixture
def served(tmp_path: Path):
    with running_service(tmp_path) as (service, client, engine):
        yield service, client, engine, tmp_path


def test_ping_replies_from_the_server_port(served) -> None:
    service, client, _, _ = served
    pong = client.ping()
    assert pong.args == []
    assert pong.source == service.address
    assert_wellformed(client)


def test_hello_redirects_replies_to_its_port(served) -> None:
    service, client, _, _ = served
    other = OscClient(service.address)
    try:
        start = other.mark()
        client.send("/ddsp/hello", other.port)
        ready = other.wait_for("/ddsp/ready", start)
        assert ready.args == [__version__, "alpha"]
        assert ready.types == "ss"
        # From now on the replies to the first socket's requests reach the hello port.
        start = other.mark()
        client.send("/ddsp/ping")
        other.wait_for("/ddsp/pong", start)
        assert client.since(0, "/ddsp/pong") == []
        # Pd sends numbers as floats: an integral float is a port too.
        start = client.mark()
        client.send("/ddsp/hello", float(client.port))
        client.wait_for("/ddsp/ready", start)
        assert_wellformed(other)
    finally:
        other.close()


def test_status_reports_documented_defaults(served) -> None:
    _, client, _, _ = served
    state = client.status()
    assert state.pop("input") == ""
    assert state.pop("checkpoint") == "alpha"
    assert state.keys() == DOCUMENTED_DEFAULTS.keys()
    for key, value in DOCUMENTED_DEFAULTS.items():
        assert is_close(state[key], value), key
    assert_wellformed(client)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_each_control_replies_its_state(served, key: str) -> None:
    _, client, _, _ = served
    value = NEW_VALUES[key]
    start = client.mark()
    # Pd sends every number as a float; ints are accepted for float settings too.
    client.send(f"/ddsp/{key}", float(value))
    reply = client.wait_for("/ddsp/state", start)
    assert reply.args[0] == key
    assert is_close(reply.args[1], value)
    assert reply.types == ("sf" if SETTINGS[key].kind == "float" else "si")
    assert is_close(client.status()[key], value)
    assert client.since(start, "/ddsp/error") == []


def test_int_arguments_accepted_for_float_controls(served) -> None:
    _, client, _, _ = served
    reply = client.request("/ddsp/quiet", 30, reply="/ddsp/state")
    assert reply.args == ["quiet", 30.0]


def test_input_accepts_audio_and_reports_absolute_path(served) -> None:
    _, client, _, tmp = served
    wav = write_tone(tmp / "in.wav")
    reply = client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    assert reply.args == ["input", str(wav.resolve())]
    assert client.status()["input"] == str(wav.resolve())


def test_checkpoint_loads_in_background_and_updates_state(served) -> None:
    _, client, engine, _ = served
    start = client.mark()
    client.send("/ddsp/checkpoint", "beta")
    loaded = client.wait_for("/ddsp/loaded", start)
    assert loaded.args == ["beta", "2.x", 16000]
    assert loaded.types == "ssi"
    state = client.wait_for("/ddsp/state", start)
    assert state.args == ["checkpoint", "beta"]
    assert client.status()["checkpoint"] == "beta"
    assert engine.loads[-1].name == "beta"
    # By path as well as by name.
    path = engine.loads[0]
    loaded = client.request("/ddsp/checkpoint", str(path), reply="/ddsp/loaded")
    assert loaded.args[0] == "alpha"


def test_checkpoints_lists_every_entry(served) -> None:
    _, client, _, tmp = served
    start = client.mark()
    client.send("/ddsp/checkpoints")
    end = client.wait_for("/ddsp/checkpoints_end", start)
    begin = client.wait_for("/ddsp/checkpoints_begin", start)
    entries = client.since(start, "/ddsp/checkpoint_entry")
    assert begin.args == [2] and end.args == [2]
    assert [e.args[0] for e in entries] == [0, 1]
    assert [e.args[1] for e in entries] == ["alpha", "beta"]
    assert [e.args[2] for e in entries] == [
        str((tmp / "checkpoints" / n).resolve()) for n in ("alpha", "beta")
    ]
    assert all(e.types == "iss" for e in entries)


def test_render_reports_stages_adjusted_and_done(served) -> None:
    _, client, _, tmp = served
    wav = write_tone(tmp / "in.wav", seconds=0.5)
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    start = client.mark()
    client.send("/ddsp/render")
    done = client.wait_for("/ddsp/done", start)
    replies = client.since(start)
    stages = []
    for r in replies:
        if r.address == "/ddsp/progress" and (not stages or stages[-1] != r.args[0]):
            stages.append(r.args[0])
    assert stages == STAGES
    addresses = [r.address for r in replies]
    assert addresses.index("/ddsp/adjusted") < addresses.index("/ddsp/done")
    assert done.types == "siif"
    path, frames, rate, gain = done.args
    audio, file_rate = sf.read(path, dtype="float32")
    assert file_rate == rate == 16000
    assert len(audio) == frames
    assert is_close(gain, 20 * np.log10(10 ** (-1 / 20) / 0.5), 1e-5)
    assert abs(dominant_frequency(audio, rate) - 440.0) < 5.0
    assert sf.info(path).subtype == "FLOAT"
    assert_wellformed(client)


def test_adjusted_reply_carries_the_report(served) -> None:
    _, client, engine, tmp = served
    wav = write_tone(tmp / "in.wav")
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    client.request("/ddsp/autotune", 0.5, reply="/ddsp/state")
    adjusted = client.request("/ddsp/render", reply="/ddsp/adjusted")
    features, _ = engine.features_for(wav, None)
    mask = features.loudness_db > -40.0
    segments = int(np.count_nonzero(np.diff(mask.astype(int)) == 1))
    assert adjusted.types == "isiff"
    assert adjusted.args == [1, "ok", segments, 1.0, 0.25]
    client.request("/ddsp/adjust", 0, reply="/ddsp/state")
    adjusted = client.request("/ddsp/render", reply="/ddsp/adjusted")
    assert adjusted.args[:2] == [0, "disabled"]


def test_samplerate_and_octave_reach_the_render(served) -> None:
    _, client, _, tmp = served
    wav = write_tone(tmp / "in.wav", seconds=0.5)
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    client.request("/ddsp/samplerate", 44100.0, reply="/ddsp/state")
    client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
    client.request("/ddsp/normalize", 0, reply="/ddsp/state")
    done = client.request("/ddsp/render", reply="/ddsp/done")
    path, _frames, rate, gain = done.args
    audio, file_rate = sf.read(path, dtype="float32")
    assert rate == file_rate == 44100
    assert gain == 0.0
    assert abs(dominant_frequency(audio, rate) - 880.0) < 5.0


def test_render_needs_input_then_checkpoint(tmp_path: Path) -> None:
    with running_service(tmp_path, preload=None) as (_, client, _):
        error = client.request("/ddsp/render", reply="/ddsp/error")
        assert error.args[0] == "input"
        wav = write_tone(tmp_path / "in.wav")
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        error = client.request("/ddsp/render", reply="/ddsp/error")
        assert error.args[0] == "checkpoint"
        assert client.status()["checkpoint"] == ""
        ready = client.request("/ddsp/hello", client.port, reply="/ddsp/ready")
        assert ready.args == [__version__, ""]
        # Choosing a checkpoint makes rendering possible.
        client.request("/ddsp/checkpoint", "beta", reply="/ddsp/loaded")
        client.request("/ddsp/render", reply="/ddsp/done")


def test_features_file_has_six_documented_channels(served) -> None:
    _, client, engine, tmp = served
    wav = write_tone(tmp / "in.wav", seconds=0.4)
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
    client.request("/ddsp/loudness", -3.0, reply="/ddsp/state")
    done = client.request("/ddsp/features", reply="/ddsp/features_done")
    path, frames, channels = done.args
    assert done.types == "sii"
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == "FLOAT"
    assert rate == round(FRAME_RATE)
    assert data.shape == (frames, channels) == (frames, 6)
    # The same curves straight from the engine, in the documented channel order.
    features, _ = engine.features_for(wav, None)
    params = client_params(octave=1.0, loudness=-3.0)
    adjusted = engine.adjust(features, None, params)
    expected = np.stack(
        [
            features.f0_hz,
            features.f0_confidence,
            features.loudness_db,
            adjusted.f0_hz,
            adjusted.loudness_db,
            adjusted.mask_on.astype(np.float32),
        ],
        axis=1,
    )
    np.testing.assert_array_equal(data, expected)


def client_params(**changes: float):
    from ddsp_pd.server.state import ServerState

    state = ServerState()
    for key, value in changes.items():
        state.set(key, value)
    return state.params()


def test_cancel_stops_the_running_render(tmp_path: Path) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    with running_service(tmp_path, engine) as (service, client, _):
        wav = write_tone(tmp_path / "in.wav")
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        start = client.mark()
        client.send("/ddsp/render")
        client.wait_for("/ddsp/progress", start, where=lambda r: r.args[0] == "model")
        client.request("/ddsp/cancel", reply="/ddsp/cancelled")
        gate.set()
        settle(service, client)
        assert client.since(start, "/ddsp/done") == []
        assert len(engine.stopped) == 1 and engine.rendered == []
        assert list((tmp_path / "out").glob("render-*.wav")) == []
        # Nothing running: the reply comes at once.
        client.request("/ddsp/cancel", reply="/ddsp/cancelled")
        # The state is intact and a new render works.
        client.request("/ddsp/render", reply="/ddsp/done")


def test_change_during_render_supersedes_it(tmp_path: Path) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    with running_service(tmp_path, engine) as (service, client, _):
        wav = write_tone(tmp_path / "in.wav", seconds=0.5)
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        start = client.mark()
        client.send("/ddsp/render")
        client.wait_for("/ddsp/progress", start, where=lambda r: r.args[0] == "model")
        client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
        client.send("/ddsp/render")
        gate.set()
        done = client.wait_for("/ddsp/done", start)
        settle(service, client)
        assert len(client.since(start, "/ddsp/done")) == 1
        assert len(client.since(start, "/ddsp/adjusted")) == 1
        assert [p.octave for p in engine.rendered] == [1.0]
        # The first render stopped; a restart with octave 1 may also have been superseded by
        # the second /ddsp/render, depending on when the worker picked it up.
        assert engine.stopped[0].octave == 0.0
        assert all(p.octave == 1.0 for p in engine.stopped[1:])
        audio, rate = sf.read(done.args[0], dtype="float32")
        assert abs(dominant_frequency(audio, rate) - 880.0) < 5.0


def test_change_alone_restarts_a_running_render(tmp_path: Path) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    with running_service(tmp_path, engine) as (service, client, _):
        wav = write_tone(tmp_path / "in.wav")
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        start = client.mark()
        client.send("/ddsp/render")
        client.wait_for("/ddsp/progress", start, where=lambda r: r.args[0] == "model")
        client.request("/ddsp/octave", -1.0, reply="/ddsp/state")
        gate.set()
        client.wait_for("/ddsp/done", start)
        settle(service, client)
        assert len(client.since(start, "/ddsp/done")) == 1
        assert [p.octave for p in engine.rendered] == [-1.0]


def test_auto_renders_after_each_change(served) -> None:
    service, client, engine, tmp = served
    wav = write_tone(tmp / "in.wav", seconds=0.3)
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    reply = client.request("/ddsp/auto", 1, reply="/ddsp/state")
    assert reply.args == ["auto", 1]
    done = client.request("/ddsp/octave", 1.0, reply="/ddsp/done")
    audio, rate = sf.read(done.args[0], dtype="float32")
    assert abs(dominant_frequency(audio, rate) - 880.0) < 10.0
    # A burst of changes: the last state is the one rendered last.
    start = client.mark()
    for octave in (-1.0, 0.5, 2.0, -0.5):
        client.send("/ddsp/octave", octave)
    settle(service, client)
    dones = client.since(start, "/ddsp/done")
    assert dones, "no render after the changes"
    assert engine.rendered[-1].octave == -0.5
    audio, rate = sf.read(dones[-1].args[0], dtype="float32")
    assert abs(dominant_frequency(audio, rate) - 440.0 * 2**-0.5) < 10.0
    # Off again: changes render nothing.
    client.request("/ddsp/auto", 0, reply="/ddsp/state")
    start = client.mark()
    count = len(engine.rendered)
    client.request("/ddsp/octave", 0.0, reply="/ddsp/state")
    settle(service, client)
    assert client.since(start, "/ddsp/done") == [] and len(engine.rendered) == count


def test_unchanged_value_does_not_rerender(served) -> None:
    service, client, engine, tmp = served
    wav = write_tone(tmp / "in.wav", seconds=0.3)
    client.request("/ddsp/input", str(wav), reply="/ddsp/state")
    client.request("/ddsp/auto", 1, reply="/ddsp/state")
    client.request("/ddsp/quiet", 10.0, reply="/ddsp/done")
    settle(service, client)
    count = len(engine.rendered)
    client.request("/ddsp/quiet", 10.0, reply="/ddsp/state")
    settle(service, client)
    assert len(engine.rendered) == count


def test_old_renders_are_pruned(tmp_path: Path) -> None:
    with running_service(tmp_path, keep=3) as (_, client, _):
        (tmp_path / "out").mkdir(exist_ok=True)
        keep_me = tmp_path / "out" / "mine.wav"
        keep_me.write_bytes(b"not ours")
        wav = write_tone(tmp_path / "in.wav", seconds=0.2)
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        paths = [client.request("/ddsp/render", reply="/ddsp/done").args[0] for _ in range(5)]
        left = sorted(str(p) for p in (tmp_path / "out").glob("render-*.wav"))
        assert left == sorted(paths[-3:])
        assert keep_me.exists()
