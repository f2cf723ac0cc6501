"""Long inputs in bounded memory: block-wise features (``ddsp_pd.blockwise_features``), the
block-wise render to a file and the choice between the paths (``ddsp_pd.longform``).

Small block sizes make many seams in short clips; every block-wise result is compared with
the whole-clip one. Memory is checked structurally (what each stage is asked to hold at once),
not by timing or resident-memory figures (those are in benchmarks/bench_long.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ddsp_pd import audio_io, longform
from ddsp_pd.blockwise_features import (
    BlockOptions,
    _PraatParts,
    array_blocks,
    extract_features_blockwise,
    file_features,
)
from ddsp_pd.errors import CancelledError
from ddsp_pd.features import FeatureCache, extract_features, save_features_npz
from ddsp_pd.loudness import StreamingLoudness, compute_loudness
from ddsp_pd.pitch import PraatTracker, to_frames
from tests.conftest import VST_REFERENCE, needs_fixtures

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "default"
SR = 16000
HOP = 64
#: Small f0 parts: 3 s with 0.4 s of context, so a 20 s clip has seven parts.
SMALL_PRAAT = BlockOptions(praat_block_frames=300, praat_context_frames=40)


def melody(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Harmonic notes with vibrato, rests and a little noise (mono float32)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    out = np.zeros(n)
    start = 0
    while start < n:
        length = min(n - start, int(rng.uniform(0.25, 0.9) * sr))
        if rng.random() > 0.2:
            t = np.arange(length) / sr
            f0 = 440.0 * 2 ** ((rng.integers(55, 80) - 69 + 0.3 * np.sin(2 * np.pi * 5.5 * t)) / 12)
            phase = 2 * np.pi * np.cumsum(f0) / sr
            env = np.minimum(1, t / 0.03) * np.minimum(1, (length / sr - t) / 0.05)
            out[start : start + length] = (
                0.3 * env * sum(np.sin(k * phase) / k for k in range(1, 8))
            )
        start += length
    return (out + 1e-3 * rng.standard_normal(n)).astype(np.float32)


class LocalTracker:
    """A stand-in tracker whose frames see 25 ms of audio on a 10 ms grid (as CREPE's do)."""

    name = "local"
    step_s = 0.01

    def track(self, audio, sample_rate, frame_rate, n_frames):
        times = np.arange(int(np.floor((n_frames - 1) / frame_rate / self.step_s)) + 2) * 0.01
        padded = np.pad(np.asarray(audio, np.float64), (200, 200))
        centres = np.round(times * sample_rate).astype(int)
        rms = np.array([np.sqrt(np.mean(padded[c : c + 400] ** 2)) for c in centres])
        return to_frames(times, 100.0 + 1000.0 * rms, np.clip(10 * rms, 0, 1), frame_rate, n_frames)


# ------------------------------------------------------------------ level features


@pytest.mark.parametrize("version", ["v1", "v3"])
@pytest.mark.parametrize("block", [7, 777, 6400, 100_003])
def test_streaming_loudness_equals_the_whole_clip_exactly(version, block):
    audio = melody(2.0 if block > 7 else 0.3)[:-13]
    whole = compute_loudness(audio, SR, HOP, version)
    stream = StreamingLoudness(SR, HOP, version)
    parts = [stream.push(audio[i : i + block]) for i in range(0, len(audio), block)]
    got = np.concatenate([*parts, stream.flush()])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize(
    ("level", "version", "hop", "frame_size"),
    [("loudness", "v1", 64, None), ("loudness", "v3", 64, None), ("power", "v3", 320, 1024)],
)
def test_blockwise_level_equals_the_whole_clip_exactly(level, version, hop, frame_size):
    audio = melody(6.0, seed=2)[:-5]
    tracker = LocalTracker()
    kwargs = {"level": level, "power_frame_size": frame_size}
    whole = extract_features(audio, SR, hop, version, tracker, **kwargs)
    got = extract_features_blockwise(array_blocks(audio, 4999), SR, hop, version, tracker, **kwargs)
    assert got.level == whole.level and got.n_frames == whole.n_frames
    np.testing.assert_array_equal(got.level_db, whole.level_db)


# ------------------------------------------------------------------ f0


def _count_praat_parts(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = PraatTracker.analyse_sound

    def spy(self, samples, *args, **kwargs):
        calls.append(len(samples))
        return original(self, samples, *args, **kwargs)

    monkeypatch.setattr(PraatTracker, "analyse_sound", spy)
    return calls


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_blockwise_praat_equals_the_whole_clip_for_an_even_length(version, monkeypatch):
    """Even lengths put Praat's frames between samples: every part's frames are the whole
    clip's frames, and with 40 frames of context the path finder chooses the same path."""
    audio = melody(20.0, seed=1)
    assert len(audio) % 2 == 0
    whole = extract_features(audio, SR, HOP, version)
    parts = _count_praat_parts(monkeypatch)
    got = extract_features_blockwise(
        array_blocks(audio, 12345), SR, HOP, version, options=SMALL_PRAAT
    )
    assert len(parts) == 7 and max(parts) < len(audio) / 4
    np.testing.assert_array_equal(got.f0_hz, whole.f0_hz)
    np.testing.assert_array_equal(got.f0_confidence, whole.f0_confidence)
    np.testing.assert_array_equal(got.level_db, whole.level_db)


def test_blockwise_praat_keeps_the_clips_silence_threshold_in_quiet_parts():
    """Praat calls a frame silent relative to the sound's peak: a quiet part far from the
    clip's loud start is judged against the clip's peak, not its own."""
    audio = melody(16.0, seed=9)
    audio[3 * SR :] *= 0.004  # near Praat's silence threshold (0.003 of the peak)
    whole = extract_features(audio, SR, HOP, "v3")
    got = extract_features_blockwise(array_blocks(audio, 9999), SR, HOP, "v3", options=SMALL_PRAAT)
    np.testing.assert_array_equal(got.f0_confidence, whole.f0_confidence)
    np.testing.assert_array_equal(got.f0_hz, whole.f0_hz)


def test_blockwise_praat_stays_within_the_stated_margin_for_an_odd_length():
    """Odd lengths put the whole clip's frame times exactly on samples, and float rounding
    picks the window's first sample either way frame by frame: parts may differ by one
    sample there. The margin: f0 within 5 cents and confidence within 0.02 on all but 0.5 %
    of the frames (where Praat's path finder is undecided), and the median f0 difference
    below 0.5 cent."""
    audio = melody(20.0, seed=1)[:-1]
    whole = extract_features(audio, SR, HOP, "v3")
    got = extract_features_blockwise(array_blocks(audio, 12345), SR, HOP, "v3", options=SMALL_PRAAT)
    both = (whole.f0_hz > 0) & (got.f0_hz > 0)
    assert both.mean() > 0.99
    cents = 1200 * np.abs(np.log2(got.f0_hz[both] / whole.f0_hz[both]))
    assert np.median(cents) < 0.5
    assert np.mean(cents > 5.0) <= 0.005
    assert np.mean(np.abs(got.f0_confidence - whole.f0_confidence) > 0.02) <= 0.005


def test_praat_parts_fall_on_the_whole_clips_frames():
    """Every part's frames are at the whole clip's frame times (to float rounding)."""
    from ddsp_pd.blockwise_features import _scan, _Window

    tracker = PraatTracker()
    for n in (320_000, 320_001, 99_999):
        audio = melody(n / SR, seed=4)[:n]
        times_whole, _, _ = tracker.analyse(audio, SR)
        parts = _PraatParts(tracker, SR, _scan([audio], 0), SMALL_PRAAT)
        window = _Window(n)
        window.append(audio)
        parts.run_ready(window, final=True)
        times, _, _ = parts.track()
        assert len(times) == len(times_whole)
        np.testing.assert_allclose(times, times_whole, rtol=0, atol=1e-9)


def test_other_trackers_run_on_aligned_parts_and_equal_the_whole_clip():
    audio = melody(12.0, seed=3)[:-3]
    tracker = LocalTracker()
    whole = extract_features(audio, SR, HOP, "v3", tracker)
    options = BlockOptions(track_block_frames=700, track_context_frames=60)
    got = extract_features_blockwise(
        array_blocks(audio, 3001), SR, HOP, "v3", tracker, options=options
    )
    np.testing.assert_array_equal(got.f0_hz, whole.f0_hz)
    np.testing.assert_array_equal(got.f0_confidence, whole.f0_confidence)


# ------------------------------------------------------------------ reading files


@pytest.fixture
def read_sizes(monkeypatch) -> list[tuple[int, int]]:
    """(frames asked for, frames returned) of every SoundFile.read."""
    sizes: list[tuple[int, int]] = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        out = original(self, frames, *args, **kwargs)
        sizes.append((frames, len(out)))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    return sizes


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2)])
def test_file_blocks_equal_load_audio_and_read_bounded_blocks(tmp_path, read_sizes, rate, channels):
    audio = melody(3.0, sr=rate)
    frames = np.stack([audio, 0.5 * audio], axis=1) if channels == 2 else audio
    path = tmp_path / "in.wav"
    sf.write(str(path), frames, rate, subtype="FLOAT")
    whole = audio_io.load_audio(path, SR)
    read_sizes.clear()
    joined = np.concatenate(list(audio_io.iter_mono_blocks(path, SR, 1000)))
    np.testing.assert_array_equal(joined, whole)
    assert read_sizes and all(0 < asked <= 1000 and got <= 1000 for asked, got in read_sizes)


def test_file_blocks_raise_what_load_audio_raises(tmp_path):
    from ddsp_pd.errors import InputError

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(5000, np.float32), SR)
    bad = tmp_path / "nan.wav"
    sf.write(str(bad), np.full(5000, np.nan, np.float32), SR, subtype="FLOAT")
    short = tmp_path / "short.wav"
    sf.write(str(short), np.full(10, 0.1, np.float32), SR, subtype="FLOAT")
    for path, words in ((silent, "silent"), (bad, "NaN"), (short, "too short")):
        with pytest.raises(InputError, match=words):
            list(audio_io.iter_mono_blocks(path, SR, 777, min_samples=HOP))


def test_feature_cache_analyses_long_files_in_blocks_and_keeps_no_audio(tmp_path, monkeypatch):
    audio = melody(8.0, seed=5)
    path = tmp_path / "long.wav"
    sf.write(str(path), audio, SR, subtype="FLOAT")
    cache = FeatureCache()
    parts = _count_praat_parts(monkeypatch)
    long = cache.features(path, SR, HOP, "v3", "praat", long_seconds=1.0)
    assert parts, "the block-wise analysis was not used"
    short, kept_audio = cache.get(path, SR, HOP, "v3", "praat")
    np.testing.assert_array_equal(long.f0_hz, short.f0_hz)
    np.testing.assert_array_equal(long.level_db, short.level_db)
    assert len(kept_audio) == len(audio)  # get() still returns the audio it promises
    hits = cache.hits
    assert cache.features(path, SR, HOP, "v3", "praat", long_seconds=1.0) is long
    assert cache.hits == hits + 1


# ------------------------------------------------------------------ rendering to files


@pytest.fixture(scope="module")
def engine_and_model():
    from ddsp_pd.transfer import Engine

    engine = Engine(kernels="numpy")
    return engine, engine.load_model(DEFAULT_CHECKPOINT)


def _settings(**kwargs):
    from ddsp_pd.transfer import RenderSettings

    return RenderSettings(**kwargs)


def _features_file(tmp_path: Path, seconds: float) -> Path:
    from ddsp_pd.features import Features

    n = int(seconds * 250)
    t = np.arange(n) / 250.0
    f0 = 220.0 * 2 ** (np.round(4 * np.sin(0.7 * t)) / 12 + 0.02 * np.sin(2 * np.pi * 5 * t))
    loudness = -30.0 + 12.0 * np.sin(1.3 * t) - 25.0 * (np.sin(0.4 * t) > 0.9)
    features = Features(f0, np.full(n, 0.9), loudness, 250.0)
    return save_features_npz(tmp_path / "features.npz", features)


def test_blockwise_render_equals_the_whole_clip_at_the_seams(tmp_path, engine_and_model):
    """Through the new pipeline with 97-frame model blocks: the decoder's controls within
    1e-5 and the audio within 1e-4 of the whole-clip render with the same noise seed."""
    from ddsp_pd.features import load_features_npz

    engine, loaded = engine_and_model
    npz = _features_file(tmp_path, 12.0)
    settings = _settings(seed=3, normalize=False)
    whole = engine.render(loaded, settings, features_path=npz)
    features = load_features_npz(npz, 250.0)
    out = tmp_path / "blocks.wav"
    result = longform.render_file_blockwise(
        engine,
        loaded,
        settings,
        out,
        "WAV",
        "FLOAT",
        features=features,
        keep_controls=True,
        options=longform.LongOptions(model_block_frames=97),
    )
    written, rate = sf.read(str(out), dtype="float32")
    assert rate == loaded.model.sample_rate and result.blockwise
    assert written.shape == whole.audio.shape
    np.testing.assert_allclose(written, whole.audio, rtol=0, atol=1e-4)
    seams = np.arange(97, features.n_frames, 97) * loaded.model.hop
    near = (seams[:, None] + np.arange(-3 * HOP, 3 * HOP)).ravel()
    near = near[near < len(written)]
    np.testing.assert_allclose(written[near], whole.audio[near], rtol=0, atol=1e-4)
    adjusted = result.adjusted
    reference, _ = loaded.model.synth_controls(adjusted.f0_hz, adjusted.level_db)
    for name, value in reference.as_arrays().items():
        np.testing.assert_allclose(result.controls.as_arrays()[name], value, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"), [(".wav", "WAV", "FLOAT"), (".flac", "FLAC", "PCM_24")]
)
def test_written_file_equals_the_in_memory_render(
    tmp_path, engine_and_model, read_sizes, monkeypatch, suffix, fmt, subtype
):
    """A 12 s, 44.1 kHz stereo input through both paths (resampled in and out, normalised):
    the files agree, and no stage of the block-wise path holds more than a block."""
    engine, loaded = engine_and_model
    audio = melody(12.0, sr=44100, seed=6)
    source = tmp_path / "in.wav"
    sf.write(str(source), np.stack([audio, 0.8 * audio], axis=1), 44100, subtype="FLOAT")
    settings = _settings(seed=1)
    memory_out = tmp_path / f"memory{suffix}"
    in_memory = longform.render_file(
        engine, loaded, settings, memory_out, fmt, subtype, input_path=source, threshold=1e9
    )
    written: list[int] = []
    original_write = audio_io.BlockWriter.write
    monkeypatch.setattr(
        audio_io.BlockWriter,
        "write",
        lambda self, block: written.append(len(block)) or original_write(self, block),
    )
    read_sizes.clear()
    options = longform.LongOptions(
        model_block_frames=333, read_frames=5000, write_frames=7000, features=SMALL_PRAAT
    )
    blocks_out = tmp_path / f"blocks{suffix}"
    blockwise = longform.render_file(
        engine,
        loaded,
        settings,
        blocks_out,
        fmt,
        subtype,
        input_path=source,
        threshold=0.0,
        options=options,
    )
    reads = list(read_sizes)
    assert blockwise.blockwise and not in_memory.blockwise
    a, rate_a = sf.read(str(memory_out), dtype="float32")
    b, rate_b = sf.read(str(blocks_out), dtype="float32")
    assert rate_a == rate_b == 44100 and a.shape == b.shape == (len(audio),)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    assert abs(blockwise.gain_db - in_memory.gain_db) < 1e-3
    # Bounded: input reads of at most 5000 frames, output blocks of at most one model block
    # (333 frames of 64 samples, at 44.1/16 the samples) and the rescaling reads 7000.
    assert reads and max(asked for asked, _ in reads) <= 7000
    assert written and max(written) <= 334 * HOP * 44100 / 16000 + 2048
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.wav", memory_out.name, blocks_out.name]
    )


@needs_fixtures
def test_power_models_render_block_by_block_as_in_memory(tmp_path):
    """A DDSP-VST checkpoint (power features, its own hop and frame size) through the same
    block-wise path: power exact, the file within 1e-4 of the in-memory render."""
    from ddsp_pd.transfer import Engine

    engine = Engine(kernels="numpy")
    loaded = engine.load_model(VST_REFERENCE / "checkpoint")
    assert loaded.level == "power"
    source = tmp_path / "in.wav"
    sf.write(str(source), melody(8.0, seed=10), SR, subtype="FLOAT")
    outs = []
    for name, threshold in (("memory.wav", 1e9), ("blocks.wav", 0.0)):
        result = longform.render_file(
            engine,
            loaded,
            _settings(seed=4),
            tmp_path / name,
            "WAV",
            "FLOAT",
            input_path=source,
            threshold=threshold,
            options=longform.LongOptions(model_block_frames=41, features=SMALL_PRAAT),
        )
        outs.append((result, sf.read(str(tmp_path / name), dtype="float32")[0]))
    (memory, a), (blocks, b) = outs
    assert blocks.blockwise and not memory.blockwise
    np.testing.assert_array_equal(blocks.features.power_db, memory.features.power_db)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)


def test_a_cancelled_blockwise_render_leaves_no_file_and_the_old_output(tmp_path, engine_and_model):
    engine, loaded = engine_and_model
    npz = _features_file(tmp_path, 6.0)
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    polls = iter(range(1000))
    with pytest.raises(CancelledError):
        longform.render_file(
            engine,
            loaded,
            _settings(),
            out,
            "WAV",
            "FLOAT",
            features_path=npz,
            threshold=0.0,
            should_stop=lambda: next(polls) > 5,
            options=longform.LongOptions(model_block_frames=50),
        )
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npz", "out.wav"]


def test_the_render_command_takes_the_block_path_for_long_inputs(tmp_path, monkeypatch):
    from ddsp_pd.cli import main

    source = tmp_path / "in.wav"
    sf.write(str(source), melody(3.0, seed=7), SR, subtype="FLOAT")
    calls: list[int] = []
    original = longform.render_file_blockwise
    monkeypatch.setattr(
        longform,
        "render_file_blockwise",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    monkeypatch.setattr(longform, "LONG_INPUT_SECONDS", 1.0)
    out = tmp_path / "out.flac"
    result = CliRunner().invoke(
        main, ["render", str(source), "-c", str(DEFAULT_CHECKPOINT), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert calls == [1]
    assert "3.00 s at 16000 Hz" in result.output
    written, rate = sf.read(str(out), dtype="float32")
    assert rate == SR and len(written) == 3 * SR
    assert 0.85 < np.max(np.abs(written)) <= 0.9  # normalised to -1 dBFS, 24-bit


def test_short_inputs_keep_the_in_memory_path(tmp_path, engine_and_model, monkeypatch):
    engine, loaded = engine_and_model
    npz = _features_file(tmp_path, 2.0)
    monkeypatch.setattr(
        longform, "render_file_blockwise", lambda *a, **k: pytest.fail("block path taken")
    )
    result = longform.render_file(
        engine, loaded, _settings(), tmp_path / "o.wav", "WAV", "FLOAT", features_path=npz
    )
    assert not result.blockwise and result.frames == 2 * SR


def test_file_features_reads_the_file_twice_in_bounded_blocks(tmp_path, read_sizes):
    audio = melody(5.0, seed=8)
    path = tmp_path / "in.wav"
    sf.write(str(path), audio, SR, subtype="FLOAT")
    read_sizes.clear()
    got = file_features(path, SR, HOP, "v3", LocalTracker(), read_frames=3000)
    whole = extract_features(audio, SR, HOP, "v3", LocalTracker())
    np.testing.assert_array_equal(got.level_db, whole.level_db)
    assert sum(n for _, n in read_sizes) == 2 * len(audio)
    assert max(asked for asked, _ in read_sizes) <= 3000
