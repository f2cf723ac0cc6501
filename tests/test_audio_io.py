"""Reading audio of any format, rate and channel count; atomic WAV writes; input errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ddsp_pd import audio_io
from ddsp_pd.audio_io import load_audio, resample, write_wav_atomic
from ddsp_pd.errors import InputError, OutputError


def _sine(freq, sample_rate, seconds=1.0, amp=0.5):
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_same_rate_mono_wav_is_read_exactly(tmp_path):
    audio = _sine(440, 16000)
    path = tmp_path / "a.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    got = load_audio(path, 16000)
    assert got.dtype == np.float32 and got.ndim == 1
    np.testing.assert_array_equal(got, audio)


def test_channels_are_averaged(tmp_path):
    left = _sine(440, 16000)
    right = _sine(660, 16000, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-7)


def test_resampling_keeps_a_tone_and_its_length(tmp_path):
    """A 1 kHz tone at 44.1 kHz read at 16 kHz is the same tone sampled at 16 kHz."""
    path = tmp_path / "hi.wav"
    sf.write(path, _sine(1000, 44100, seconds=2.0), 44100, subtype="FLOAT")
    got = load_audio(path, 16000)
    expected = _sine(1000, 16000, seconds=2.0)
    assert abs(len(got) - len(expected)) <= 1
    inner = slice(800, len(expected) - 800)  # the filter's edge transients are not compared
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-3)


def test_resampler_removes_content_above_the_new_nyquist():
    """A 10 kHz tone cannot exist at 16 kHz: a real (band-limited) resampler removes it,
    where naive decimation or linear interpolation would alias it to 6 kHz."""
    tone = _sine(10000, 44100, seconds=1.0)
    out = resample(tone, 44100, 16000)
    rms = float(np.sqrt(np.mean(out[400:-400] ** 2)))
    assert rms < 1e-3 * float(np.sqrt(np.mean(tone**2)))


def test_resample_same_rate_is_a_float32_copy():
    audio = np.arange(10, dtype=np.float64)
    out = resample(audio, 16000, 16000)
    assert out.dtype == np.float32 and out is not audio
    np.testing.assert_array_equal(out, audio)


@pytest.mark.parametrize(
    "fmt,subtype,suffix,tol",
    [
        ("FLAC", "PCM_24", ".flac", 1e-6),
        ("AIFF", "PCM_16", ".aiff", 1e-4),
        ("WAV", "PCM_16", ".wav", 1e-4),
        ("OGG", "VORBIS", ".ogg", 0.05),
    ],
)
def test_other_formats(tmp_path, fmt, subtype, suffix, tol):
    audio = _sine(330, 22050)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, audio, 22050, format=fmt, subtype=subtype)
    got = load_audio(path, 22050)
    assert abs(len(got) - len(audio)) <= 1
    n = min(len(got), len(audio))
    # Lossy Vorbis is compared by level only; lossless formats sample by sample.
    if fmt == "OGG":
        assert abs(np.std(got[:n]) - np.std(audio[:n])) < tol
    else:
        np.testing.assert_allclose(got[:n], audio[:n], atol=tol)


def test_mp3_when_libsndfile_supports_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    path = tmp_path / "clip.mp3"
    try:
        sf.write(path, _sine(440, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        pytest.skip(f"cannot encode MP3 here: {err}")
    got = load_audio(path, 16000)
    # MP3 adds encoder delay and padding; check length and level only.
    assert abs(len(got) / 16000 - 1.0) < 0.1
    assert abs(np.std(got) - np.std(_sine(440, 16000))) < 0.05


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_audio(tmp_path / "nope.wav", 16000)
    _one_line_error(excinfo, "not found", "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_audio(tmp_path, 16000)
    _one_line_error(excinfo, "directory", str(tmp_path))


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "not a readable audio file", "notes.wav")


def test_truncated_header(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _sine(440, 16000), 16000)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "cut.wav")


def test_empty(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "empty", "empty.wav")


def test_too_short_for_one_frame(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _sine(440, 16000)[:40], 16000)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000, min_samples=64)
    _one_line_error(excinfo, "too short", "short.wav", "64")
    assert len(load_audio(path, 16000, min_samples=40)) == 40


def test_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "silent", "zeros.wav")


def test_silent_after_mixing_to_mono(tmp_path):
    tone = _sine(440, 16000)
    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([tone, -tone], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "silent", "mono", "phase.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    audio = _sine(440, 16000)
    audio[100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    with pytest.raises(InputError) as excinfo:
        load_audio(path, 16000)
    _one_line_error(excinfo, "NaN", "nan.wav")


def test_bytes_are_decoded_instead_of_the_path(tmp_path):
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(first, _sine(440, 16000), 16000, subtype="FLOAT")
    sf.write(second, _sine(660, 16000), 16000, subtype="FLOAT")
    got = load_audio(second, 16000, data=first.read_bytes())
    np.testing.assert_array_equal(got, _sine(440, 16000))


# ---------------------------------------------------------------- writing


def test_write_float_round_trip_and_parents(tmp_path):
    audio = _sine(440, 16000) * 3.0  # FLOAT keeps values beyond [-1, 1]
    path = tmp_path / "deep" / "er" / "out.wav"
    assert write_wav_atomic(path, audio, 16000) == path
    got, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(got, audio)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]


def test_write_pcm16_clips(tmp_path):
    audio = np.array([0.0, 0.5, 1.5, -2.0], np.float32)
    path = tmp_path / "out.wav"
    write_wav_atomic(path, audio, 8000, subtype="PCM_16")
    got, _ = sf.read(path, dtype="float32")
    assert sf.info(path).subtype == "PCM_16"
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, -1.0], atol=1 / 32768)


def test_write_replaces_through_a_temp_file_in_the_same_folder(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    write_wav_atomic(path, np.zeros(100, np.float32), 16000)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # At the moment of the rename the target still holds the old, complete file.
        seen.append((Path(src), Path(dst), sf.info(dst).frames, sf.info(src).frames))
        real_replace(src, dst)

    monkeypatch.setattr(audio_io.os, "replace", spy)
    write_wav_atomic(path, np.ones(200, np.float32) * 0.1, 16000)
    ((src, dst, old_frames, new_frames),) = seen
    assert src.parent == dst.parent == tmp_path and src != dst
    assert (old_frames, new_frames) == (100, 200)
    assert sf.info(path).frames == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_write_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as excinfo:
        write_wav_atomic(blocker / "out.wav", np.zeros(10, np.float32), 16000)
    _one_line_error(excinfo, "cannot write", "out.wav")
    with pytest.raises(OutputError, match="subtype"):
        write_wav_atomic(tmp_path / "a.wav", np.zeros(10, np.float32), 16000, subtype="MP3")
    with pytest.raises(OutputError, match="NaN"):
        write_wav_atomic(tmp_path / "b.wav", np.array([0.0, np.nan], np.float32), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    write_wav_atomic(path, np.zeros(100, np.float32), 16000)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio_io.sf, "write", broken)
    with pytest.raises(OutputError, match="No space left"):
        write_wav_atomic(path, np.ones(50, np.float32) * 0.1, 16000)
    assert sf.info(path).frames == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
