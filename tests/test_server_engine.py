"""The server with the real :class:`ddsp_pd.transfer.Engine` and the reference checkpoint.

Every result that comes over OSC is compared with what the engine gives when called
directly with the same settings, so these tests check that the server passes the state,
the files and the report through faithfully.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import AUDIO, REFERENCE, REFERENCE_CHECKPOINT, needs_fixtures
from test_server_support import OscClient, build, settle

from ddsp_pd.server.app import OscService, ServerConfig
from ddsp_pd.server.engine import transfer_settings
from ddsp_pd.server.state import ServerState
from ddsp_pd.transfer import Engine

#: Seconds of the input clip the tests render (a short excerpt keeps CI modest).
CLIP_SECONDS = 2.0
#: Same process, same inputs, same seed: the server's file must equal the direct render up to
#: the float32 WAV round trip (exact) and TensorFlow's run-to-run jitter on CPU.
AUDIO_ATOL = 1e-5
RENDER_TIMEOUT = 120.0


class GatedEngine:
    """The real engine, but its model stage waits for ``gate`` (so a change can provably
    arrive while a render runs)."""

    def __init__(self, engine: Engine, gate: threading.Event) -> None:
        self.engine = engine
        self.gate = gate

    def load_model(self, checkpoint: Any) -> Any:
        return self.engine.load_model(checkpoint)

    def features_for(self, input_path: Any, loaded: Any) -> Any:
        return self.engine.features_for(input_path, loaded)

    def adjust(self, features: Any, loaded: Any, settings: Any) -> Any:
        return self.engine.adjust(features, loaded, settings)

    def render(self, loaded: Any, settings: Any, **kwargs: Any) -> Any:
        progress, should_stop = kwargs["progress"], kwargs["should_stop"]

        def gated(stage: str, fraction: float) -> None:
            progress(stage, fraction)
            if stage == "model" and fraction == 0.0:
                while not self.gate.wait(0.01) and not should_stop():
                    pass

        return self.engine.render(loaded, settings, **{**kwargs, "progress": gated})


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(checkpoint_dirs=[REFERENCE])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio, rate = sf.read(str(AUDIO / "syn_vibrato.wav"), dtype="float32")
    path = tmp_path_factory.mktemp("clip") / "vibrato_2s.wav"
    sf.write(str(path), audio[: int(CLIP_SECONDS * rate)], rate)
    return path


def _serve(engine: Any, tmp: Path) -> OscService:
    config = ServerConfig(port=0, output_dir=tmp / "out", checkpoint_dirs=[REFERENCE])
    service = OscService(engine, config)
    service.preload(str(REFERENCE_CHECKPOINT))
    service.start()
    return service


@pytest.fixture
def served(engine: Engine, tmp_path: Path):
    service = _serve(engine, tmp_path)
    client = OscClient(service.address)
    try:
        yield service, client
    finally:
        service.stop()
        client.close()


def _params(clip: Path, **changes: float):
    state = ServerState(input_path=clip)
    for key, value in changes.items():
        state.set(key, value)
    return state.params()


def _direct(engine: Engine, clip: Path, **changes: float) -> Any:
    loaded = engine.load_model(REFERENCE_CHECKPOINT)
    return engine.render(loaded, transfer_settings(_params(clip, **changes)), input_path=clip)


@needs_fixtures
def test_render_matches_the_engine(served, engine: Engine, clip: Path) -> None:
    _, client = served
    client.request("/ddsp/input", str(clip), reply="/ddsp/state")
    client.request("/ddsp/quiet", 30.0, reply="/ddsp/state")
    start = client.mark()
    client.send("/ddsp/render")
    done = client.wait_for("/ddsp/done", start, RENDER_TIMEOUT)
    adjusted = client.wait_for("/ddsp/adjusted", start)
    path, frames, rate, gain = done.args
    audio, file_rate = sf.read(path, dtype="float32")
    expected = _direct(engine, clip, quiet=30.0)
    assert file_rate == rate == expected.sample_rate == sf.info(str(clip)).samplerate
    assert frames == len(audio) == len(expected.audio)
    np.testing.assert_allclose(audio, expected.audio, atol=AUDIO_ATOL)
    assert gain == pytest.approx(expected.gain_db, abs=1e-4)
    report = expected.adjusted.report
    tuning = report.tuning_factor or 0.0
    assert adjusted.args[:3] == [int(report.adjust_ran), report.reason, report.note_segments]
    assert adjusted.args[3:] == pytest.approx([report.auto_octave, tuning], abs=1e-6)


@needs_fixtures
def test_features_file_matches_the_engine(served, engine: Engine, clip: Path) -> None:
    _, client = served
    client.request("/ddsp/input", str(clip), reply="/ddsp/state")
    client.request("/ddsp/octave", -1.0, reply="/ddsp/state")
    done = client.request("/ddsp/features", reply="/ddsp/features_done", timeout=RENDER_TIMEOUT)
    path, frames, channels = done.args
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    loaded = engine.load_model(REFERENCE_CHECKPOINT)
    features, _ = engine.features_for(clip, loaded)
    adjusted = engine.adjust(features, loaded, transfer_settings(_params(clip, octave=-1.0)))
    assert rate == round(loaded.model.config.frame_rate)
    assert data.shape == (frames, channels) == (len(features.f0_hz), 6)
    expected = [
        features.f0_hz,
        features.f0_confidence,
        features.loudness_db,
        adjusted.f0_hz,
        adjusted.loudness_db,
        adjusted.mask_on,
    ]
    for channel, curve in enumerate(expected):
        np.testing.assert_array_equal(data[:, channel], np.asarray(curve, np.float32))


@needs_fixtures
def test_supersession_with_the_real_engine(engine: Engine, clip: Path, tmp_path: Path) -> None:
    gate = threading.Event()
    service = _serve(GatedEngine(engine, gate), tmp_path)
    client = OscClient(service.address)
    try:
        client.request("/ddsp/input", str(clip), reply="/ddsp/state")
        start = client.mark()
        client.send("/ddsp/render")
        client.wait_for(
            "/ddsp/progress", start, RENDER_TIMEOUT, where=lambda r: r.args[0] == "model"
        )
        client.request("/ddsp/octave", -1.0, reply="/ddsp/state")
        client.send("/ddsp/render")
        gate.set()
        done = client.wait_for("/ddsp/done", start, RENDER_TIMEOUT)
        settle(service, client, RENDER_TIMEOUT)
        assert len(client.since(start, "/ddsp/done")) == 1
        audio, _ = sf.read(done.args[0], dtype="float32")
        np.testing.assert_allclose(audio, _direct(engine, clip, octave=-1.0).audio, atol=AUDIO_ATOL)
    finally:
        service.stop()
        client.close()


@needs_fixtures
def test_checkpoints_and_loading(served, engine: Engine) -> None:
    _, client = served
    start = client.mark()
    client.send("/ddsp/checkpoints")
    client.wait_for("/ddsp/checkpoints_end", start)
    entries = client.since(start, "/ddsp/checkpoint_entry")
    assert [(e.args[1], e.args[2]) for e in entries] == [
        ("checkpoint", str(REFERENCE_CHECKPOINT.resolve()))
    ]
    loaded = client.request("/ddsp/checkpoint", "checkpoint", reply="/ddsp/loaded")
    config = engine.load_model(REFERENCE_CHECKPOINT).model.config
    assert loaded.args == ["checkpoint", config.era, config.sample_rate]


@needs_fixtures
def test_bad_checkpoint_and_input_keep_serving(served, clip: Path, tmp_path: Path) -> None:
    service, client = served
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ckpt-1.index").write_bytes(b"\x00garbage" * 10)
    (broken / "ckpt-1.data-00000-of-00001").write_bytes(b"junk")
    before = client.status()
    start = client.mark()
    client.send_raw(build("/ddsp/checkpoint", str(broken)))
    error = client.wait_for("/ddsp/error", start, RENDER_TIMEOUT)
    assert error.args[0] == "checkpoint"
    assert client.status() == before
    client.request("/ddsp/input", str(clip), reply="/ddsp/state")
    client.request("/ddsp/render", reply="/ddsp/done", timeout=RENDER_TIMEOUT)
    settle(service, client, RENDER_TIMEOUT)


@needs_fixtures
def test_long_input_renders_block_by_block(
    served, engine: Engine, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input over the long-input threshold goes through the block-wise file render (flat
    memory): the in-memory render is never called, and the file equals a direct block-wise
    render of the same input with the same settings."""
    from ddsp_pd import longform

    monkeypatch.setattr(longform, "LONG_INPUT_SECONDS", CLIP_SECONDS / 2)

    def in_memory(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the in-memory render ran for a long input")

    _, client = served
    client.request("/ddsp/input", str(clip), reply="/ddsp/state")
    monkeypatch.setattr(engine, "render", in_memory)
    start = client.mark()
    client.send("/ddsp/render")
    done = client.wait_for("/ddsp/done", start, RENDER_TIMEOUT)
    assert not client.since(start, "/ddsp/error")
    path, frames, rate, _gain = done.args
    audio, file_rate = sf.read(path, dtype="float32")
    loaded = engine.load_model(REFERENCE_CHECKPOINT)
    direct = longform.render_file(
        engine,
        loaded,
        transfer_settings(_params(clip)),
        tmp_path / "direct.wav",
        "WAV",
        "FLOAT",
        input_path=clip,
        threshold=CLIP_SECONDS / 2,
    )
    assert direct.blockwise
    expected, _ = sf.read(str(direct.path), dtype="float32")
    assert file_rate == rate == direct.sample_rate
    assert frames == len(audio) == len(expected)
    np.testing.assert_allclose(audio, expected, atol=AUDIO_ATOL)
