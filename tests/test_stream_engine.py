"""The live engine: streaming equals offline, block edges, determinism, controls mid-stream,
live auto-adjust, latency bookkeeping, every model kind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import AUDIO, REFERENCE_CHECKPOINT, VST_REFERENCE, needs_fixtures

from ddsp_pd.controls import ControlSettings, auto_octave_shift
from ddsp_pd.errors import CheckpointError, ControlError
from ddsp_pd.kinds.controls import SynthControls
from ddsp_pd.stream.controls import LiveAdjust, LiveControls, Ramp
from ddsp_pd.stream.engine import EngineSettings, FramePipeline, StreamEngine
from ddsp_pd.stream.models import live_model_from, open_live_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "default"
NO_ADJUST = ControlSettings(adjust=False, confidence=0.0)


@pytest.fixture(scope="module")
def model():
    return open_live_model(DEFAULT)


def _features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f0 = (220.0 * 2 ** np.cumsum(rng.normal(0, 0.01, n))).astype(np.float32)
    level = np.clip(-30 + np.cumsum(rng.normal(0, 0.5, n)), -80, 10).astype(np.float32)
    return f0, level


def _chunks(n: int, seed: int, high: int = 7) -> list[slice]:
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, high)))
        out.append(slice(start, stop))
        start = stop
    return out


def _pipeline(model, seed: int = 0) -> FramePipeline:
    controls = LiveControls(model.frame_rate, model.min_db, NO_ADJUST)
    return FramePipeline(model, controls, seed, "numpy")


def _stream(model, f0, level, seed: int = 0, high: int = 7):
    pipe = _pipeline(model, seed)
    got: list[SynthControls] = []
    pipe.on_controls = got.append
    conf = np.ones_like(f0)
    audio = [pipe.run(f0[s], conf[s], level[s]) for s in _chunks(f0.size, seed + 1, high)]
    return SynthControls.concatenate(got), np.concatenate(audio), pipe.synth.delay


def _assert_controls_equal(a: SynthControls, b: SynthControls) -> None:
    for name in ("amplitudes", "harmonic_distribution", "noise_magnitudes"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.max(np.abs(x - y)) <= 1e-5 * max(1.0, float(np.max(np.abs(y)))), name


def test_decoder_frame_by_frame_equals_the_whole_clip(model):
    f0, level = _features(500)
    streamed, _, _ = _stream(model, f0, level)
    whole, _ = model.controls(f0, level, None)
    _assert_controls_equal(streamed, whole)


def test_streamed_audio_is_the_offline_render_later_by_the_noise_filter_delay(model):
    f0, level = _features(600, seed=4)
    _, audio, delay = _stream(model, f0, level, seed=3)
    offline = model.model.render(f0, level, seed=3)
    assert delay > 0
    n = audio.size - delay  # the stream holds back the last frame (no successor yet)
    assert n >= (f0.size - 2) * model.hop
    assert np.max(np.abs(audio[:delay])) < 1e-9  # silence (FFT rounding aside)
    scale = float(np.max(np.abs(offline)))
    assert np.max(np.abs(audio[delay:] - offline[:n])) < 1e-5 * scale


def test_same_seed_same_output_and_another_seed_another_noise(model):
    x = _tone(0.6, 48000)
    a = _run(model, x, 48000, 256, EngineSettings(seed=7))
    b = _run(model, x, 48000, 256, EngineSettings(seed=7))
    c = _run(model, x, 48000, 256, EngineSettings(seed=8))
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-4


def _tone(seconds: float, rate: int, hz: float = 330.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    env = np.minimum(1.0, t / 0.05)
    return (level * env * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _run(model, x, rate, block, settings=None, engine=None, sizes=None):
    engine = engine or StreamEngine(model, rate, settings, backend="numpy")
    out = []
    if sizes is None:
        out = [engine.process(x[i : i + block]) for i in range(0, x.size, block)]
    else:
        start = 0
        for size in sizes:
            out.append(engine.process(x[start : start + size]))
            start += size
    assert engine.stats.underruns == 0
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [16000, 48000, 44100])
def test_block_sizes_that_do_and_do_not_divide_the_hop_give_the_same_stream(model, rate):
    x = _tone(0.8, rate)
    ref = _run(model, x, rate, 64)
    assert ref.size == x.size
    assert np.max(np.abs(ref)) > 1e-3
    # 37 and 1000 do not divide the hop (64 at 16 kHz); 32 and 4096 bracket the range.
    for block in (37, 32, 1000, 4096):
        out = _run(model, x, rate, block)
        assert np.max(np.abs(out - ref)) < 1e-5, block
    rng = np.random.default_rng(5)
    sizes = list(rng.integers(1, 700, size=x.size // 100))
    sizes.append(x.size - sum(sizes))
    out = _run(model, x, rate, 0, sizes=[s for s in sizes if s > 0])
    assert np.max(np.abs(out - ref)) < 1e-5


def test_small_blocks_that_complete_no_step_are_only_held(model):
    """Blocks too small to complete a model step are held, not resampled or analysed: the
    input resampler runs once per step, not once per block, and the stream is unchanged."""
    rate, block = 48000, 64
    engine = StreamEngine(model, rate, EngineSettings(controls=NO_ADJUST), backend="numpy")
    calls = []
    resample = engine._in.process
    engine._in.process = lambda x: calls.append(x.size) or resample(x)
    x = _tone(1.0, rate)
    out = _run(model, x, rate, block, engine=engine)
    blocks = -(-x.size // block)
    steps = engine.stats.frames / engine.frames_per_step
    assert engine.stats.blocks == blocks
    assert sum(calls) + sum(d.size for d in engine._deferred) == x.size
    assert len(calls) <= steps + 2 < blocks / 4
    ref = _run(model, x, rate, 4096, EngineSettings(controls=NO_ADJUST))
    assert np.max(np.abs(out - ref)) < 1e-5


def test_the_fifo_never_runs_dry_and_its_prime_is_the_smallest_that_works(model):
    for rate in (16000, 22050, 48000):
        engine = StreamEngine(model, rate, backend="numpy")
        x = np.zeros(rate // 8, np.float32)
        for i in range(x.size):  # one sample at a time: the worst case for the prime
            engine.process(x[i : i + 1])
        assert engine.stats.underruns == 0
        short = StreamEngine(model, rate, backend="numpy")
        short._fifo = short._fifo[1:]  # one sample less would have been too little
        for i in range(x.size):
            short.process(x[i : i + 1])
        assert short.stats.underruns > 0
        ratio = rate / model.sample_rate
        assert engine.latency_samples == engine.prime + round(engine.pipeline.synth.delay * ratio)


def test_octave_change_mid_stream_glides_at_the_next_frame(model):
    engine = StreamEngine(model, 16000, EngineSettings(controls=NO_ADJUST), backend="numpy")
    f0s: list[np.ndarray] = []
    engine.pipeline.on_controls = lambda c: f0s.append(c.f0_hz)
    x = _tone(1.0, 16000)
    block = 160
    for k, i in enumerate(range(0, x.size, block)):
        if k == 50:
            seen = sum(a.size for a in f0s)
            engine.set_control("octave", 1.0)
        engine.process(x[i : i + block])
    f0 = np.concatenate(f0s)
    before = f0[seen - 20 : seen]
    ramp = engine.controls.ramp_frames
    assert np.all(np.abs(1200 * np.log2(before / 330.0)) < 20)
    after = f0[seen + ramp + 5 : seen + ramp + 40]
    assert np.all(np.abs(1200 * np.log2(after / 660.0)) < 20)
    # The change starts at the first frame after the command and is spread over the ramp:
    # no frame-to-frame step larger than an octave / ramp (plus the input's own wobble).
    steps = np.abs(np.diff(np.log2(f0[seen - 1 : seen + ramp + 1])))
    assert f0[seen] > before[-1] * 1.005
    assert np.max(steps) < 1.5 / ramp


def test_ramp_reaches_its_target_linearly():
    r = Ramp(0.0, 4)
    r.set(1.0)
    np.testing.assert_allclose(r.next(6), [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    r.set(0.0)
    np.testing.assert_allclose(r.next(2), [0.75, 0.5])


def test_bad_live_controls_are_refused_at_once(model):
    engine = StreamEngine(model, 48000, backend="numpy")
    with pytest.raises(ControlError):
        engine.set_control("octave", 9)
    with pytest.raises(ControlError):
        engine.set_control("wobble", 1)
    with pytest.raises(ControlError):
        engine.note_on(200, 1)
    with pytest.raises(ControlError):
        StreamEngine(model, 48000, EngineSettings(mode="karaoke"))


def _adjust_frames(midi: float, seconds: float, frame_rate: float, level: float = -20.0):
    n = int(seconds * frame_rate)
    f0 = np.full(n, 440.0 * 2 ** ((midi - 69) / 12), np.float32)
    return f0, np.ones(n, np.float32), np.full(n, level, np.float32)


@pytest.mark.parametrize("mode", ["hold", "running"])
def test_live_auto_adjust_fits_the_first_notes_then_holds_or_keeps_running(model, mode):
    stats = model.statistics
    fr = model.frame_rate
    adjust = LiveAdjust(fr, model.min_db, stats, mode=mode, hold_seconds=2.0, window_seconds=2.0)
    controls = LiveControls(fr, model.min_db, ControlSettings(confidence=0.0), adjust)
    low = stats.mean_pitch - 24  # two octaves below the dataset
    f0, conf, level = _adjust_frames(low, 3.0, fr)
    out_f0, out_level = controls.apply(f0, conf, level)
    expected = auto_octave_shift(f0, np.ones(f0.size, bool), stats.mean_pitch)
    assert adjust.estimate.octave == expected == 2.0
    settled = out_f0[-10:]
    np.testing.assert_allclose(settled, f0[-10:] * 4.0, rtol=1e-5)
    # The level map is the offline quantile map of the notes heard (here one value).
    assert np.all(np.abs(out_level[-10:] - out_level[-1]) < 1e-4)
    assert adjust.held == (mode == "hold")
    # Then the player moves up to just above the dataset's register: held keeps +2,
    # running follows to 0 (the notebook's rounding gives +1 for any gap in (0, 1.5]).
    f0b, confb, levelb = _adjust_frames(low + 25, 4.0, fr)
    out_b, _ = controls.apply(f0b, confb, levelb)
    ratio = out_b[-10:] / f0b[-10:]
    np.testing.assert_allclose(ratio, 4.0 if mode == "hold" else 1.0, rtol=1e-5)


def test_live_auto_adjust_does_not_depend_on_how_frames_arrive(model):
    fr = model.frame_rate
    rng = np.random.default_rng(6)
    f0, conf, level = _adjust_frames(model.statistics.mean_pitch - 14, 3.0, fr)
    level = level + rng.normal(0, 3, level.size).astype(np.float32)
    outs = []
    for high in (2, 50):
        adjust = LiveAdjust(fr, model.min_db, model.statistics, hold_seconds=1.0)
        controls = LiveControls(fr, model.min_db, ControlSettings(confidence=0.0), adjust)
        parts = [controls.apply(f0[s], conf[s], level[s]) for s in _chunks(f0.size, 9, high)]
        outs.append(tuple(np.concatenate(p) for p in zip(*parts, strict=True)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-5)


def test_a_model_that_cannot_stream_is_refused_with_one_line():
    with pytest.raises(CheckpointError, match="cannot stream"):
        live_model_from(object(), name="thing")


def test_latency_is_reported_by_parts(model):
    engine = StreamEngine(model, 48000, EngineSettings(frames_per_step=1), backend="numpy")
    parts = engine.describe_latency()
    assert parts["analysis_lookahead_ms"] == pytest.approx(16.0)
    assert parts["frame_ms"] == pytest.approx(4.0)
    assert engine.latency_ms == pytest.approx(parts["total_ms"])
    assert 20.0 < engine.latency_ms < 35.0
    for k in (0, 4):  # 0: auto, 12 ms worth = 3 frames
        slow = StreamEngine(model, 48000, EngineSettings(frames_per_step=k), backend="numpy")
        steps = 3 if k == 0 else k
        assert slow.frames_per_step == steps
        assert slow.latency_samples - engine.latency_samples == (steps - 1) * 64 * 3


# --------------------------------------------------------------------- every model kind

KINDS = {
    "solo reference": REFERENCE_CHECKPOINT,
    "vst checkpoint": VST_REFERENCE / "checkpoint",
    "tflite": VST_REFERENCE / "export" / "tflite" / "clarinet.tflite",
}


@needs_fixtures
@pytest.mark.parametrize("name", list(KINDS))
def test_every_model_kind_streams_with_offline_parity(name):
    live = open_live_model(KINDS[name])
    n = 120 if live.hop == 320 else 300
    f0, level = _features(n, seed=11)
    streamed, audio, delay = _stream(live, f0, level, seed=2, high=4)
    whole, _ = live.controls(f0, level, None)
    _assert_controls_equal(streamed, whole)
    assert np.max(np.abs(audio)) > 0
    render = getattr(live.model, "render", None)
    if render is not None:  # checkpoints: the stream is the offline render, later
        offline = render(f0, level, seed=2)
        m = min(audio.size - delay, offline.size)
        scale = float(np.max(np.abs(offline)))
        assert np.max(np.abs(audio[delay : delay + m] - offline[:m])) < 1e-4 * scale


@needs_fixtures
def test_a_fixture_clip_streams_at_48k_through_a_power_model():
    from ddsp_pd.audio_io import load_audio

    live = open_live_model(KINDS["tflite"])
    x = load_audio(AUDIO / "midi_flute.wav", 48000)[: 48000 * 2]
    settings = EngineSettings(controls=replace(ControlSettings(), adjust=True))
    out = _run(live, x, 48000, 256, settings)
    assert out.size == x.size
    assert np.isfinite(out).all() and np.max(np.abs(out)) > 1e-3


@needs_fixtures
def test_the_auto_step_is_shorter_for_large_models(model):
    """Auto steps: 12 ms worth (3 frames at 250 frames/s) for the default, 8 ms worth for a
    model over 2 M parameters (the solo-size fixture, 2 frames, in either precision), 1
    frame at 50 frames/s; an explicit ``frames_per_step`` wins."""
    solo = open_live_model(REFERENCE_CHECKPOINT)
    solo_fast = open_live_model(REFERENCE_CHECKPOINT, precision="fast")
    vst = open_live_model(VST_REFERENCE / "checkpoint")
    assert model.model.parameter_count < 2_000_000 < solo.model.parameter_count
    assert StreamEngine(model, 48000, backend="numpy").frames_per_step == 3
    assert StreamEngine(solo, 48000, backend="numpy").frames_per_step == 2
    assert StreamEngine(solo_fast, 48000, backend="numpy").frames_per_step == 2
    assert StreamEngine(vst, 48000, backend="numpy").frames_per_step == 1
    fixed = EngineSettings(frames_per_step=4)
    assert StreamEngine(solo, 48000, fixed, backend="numpy").frames_per_step == 4
