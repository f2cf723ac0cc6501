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


def test_write_errors_name_the_file_in_the_way(tmp_path):
    """A parent that is a file is named as such, not as mkdir's "File exists"."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "out.wav", blocker / "deeper" / "out.wav"):
        with pytest.raises(OutputError) as excinfo:
            write_wav_atomic(target, np.zeros(10, np.float32), 16000)
        _one_line_error(excinfo, "cannot write", str(blocker), "is not a folder")
        assert "File exists" not in str(excinfo.value)
        assert "Not a directory" not in str(excinfo.value)
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [
        ("out.wav", "WAV", "FLOAT"),
        ("out.flac", "FLAC", "PCM_24"),
        ("out.ogg", "OGG", "VORBIS"),
        ("out.aiff", "AIFF", "PCM_24"),
        ("out.aif", "AIFF", "PCM_24"),
        ("OUT.FLAC", "FLAC", "PCM_24"),
    ],
)
def test_write_audio_uses_the_format_its_extension_names(tmp_path, name, fmt, subtype):
    audio = _sine(440, 16000, seconds=0.5)
    path = tmp_path / name
    assert audio_io.write_audio_atomic(path, audio, 16000) == path
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate) == (fmt, subtype, 16000)
    assert info.frames == len(audio)
    got, _ = sf.read(path, dtype="float32")
    if fmt != "OGG":  # lossless: sample by sample (24-bit PCM quantisation)
        np.testing.assert_allclose(got, audio, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_write_audio_format_and_subtype_override_the_extension(tmp_path):
    path = tmp_path / "out.bin"
    audio_io.write_audio_atomic(path, _sine(440, 16000), 16000, format="aiff", subtype="pcm_16")
    assert (sf.info(path).format, sf.info(path).subtype) == ("AIFF", "PCM_16")


@pytest.mark.parametrize("name", ["out.mp3", "out", "out.wav.txt"])
def test_unknown_extension_is_refused_with_the_supported_ones(tmp_path, name):
    with pytest.raises(OutputError) as excinfo:
        audio_io.write_audio_atomic(tmp_path / name, _sine(440, 16000), 16000)
    _one_line_error(excinfo, name, ".wav", ".flac", ".ogg", ".aiff", "--format")
    assert list(tmp_path.iterdir()) == []


def test_output_format_refuses_subtypes_the_format_cannot_hold(tmp_path):
    with pytest.raises(OutputError) as excinfo:
        audio_io.output_format(tmp_path / "out.flac", subtype="FLOAT")
    _one_line_error(excinfo, "FLOAT", "FLAC", "PCM_24")
    with pytest.raises(OutputError, match="unknown format"):
        audio_io.output_format(tmp_path / "out.wav", format="MP4")
    assert audio_io.output_format(tmp_path / "x.wav", format="flac") == ("FLAC", "PCM_24")


def test_check_encodable_catches_rate_limits_before_any_work():
    audio_io.check_encodable("OGG", "VORBIS", 44100)
    if sf.check_format("OGG", "OPUS"):
        with pytest.raises(OutputError, match="44100"):
            audio_io.check_encodable("OGG", "OPUS", 44100)


def test_failed_flac_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.flac"
    audio_io.write_audio_atomic(path, np.zeros(100, np.float32), 16000)
    before = path.read_bytes()

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio_io.os, "fsync", broken)
    with pytest.raises(OutputError, match="No space left"):
        audio_io.write_audio_atomic(path, np.ones(50, np.float32) * 0.1, 16000)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.flac"]


def test_write_wav_atomic_keeps_writing_wav_whatever_the_name(tmp_path):
    """The server's call: write_wav_atomic(path, audio, rate, subtype=...) writes WAV."""
    path = tmp_path / "render-1.data"
    write_wav_atomic(path, _sine(440, 16000), 16000, subtype="FLOAT")
    assert (sf.info(path).format, sf.info(path).subtype) == ("WAV", "FLOAT")


# ---------------------------------------------------------------- truncated input


def _cut(tmp_path, name, fmt, subtype, keep_seconds, seconds=3.0, rate=16000):
    """A file whose header says ``seconds`` but only ``keep_seconds`` of data follow."""
    path = tmp_path / name
    sf.write(path, _sine(440, rate, seconds=seconds), rate, format=fmt, subtype=subtype)
    data = path.read_bytes()
    bytes_per_frame = {"PCM_16": 2, "FLOAT": 4, "PCM_24": 3}[subtype]
    data_start = len(data) - int(seconds * rate) * bytes_per_frame
    path.write_bytes(data[: data_start + int(keep_seconds * rate) * bytes_per_frame])
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [("cut.wav", "WAV", "PCM_16"), ("cut.wav", "WAV", "FLOAT"), ("cut.aiff", "AIFF", "PCM_24")],
)
def test_truncated_file_warns_with_both_durations(tmp_path, name, fmt, subtype):
    path = _cut(tmp_path, name, fmt, subtype, keep_seconds=0.06)
    with pytest.warns(audio_io.AudioWarning) as record:
        audio = load_audio(path, 16000)
    assert len(audio) == 960
    (warning,) = record
    message = str(warning.message)
    assert "\n" not in message
    for word in (name, "truncated", "3.00 s", "0.06 s"):
        assert word in message, message
    # The bytes given instead of the path are checked the same way.
    with pytest.warns(audio_io.AudioWarning, match="3.00 s"):
        load_audio(path, 16000, data=path.read_bytes())


def test_probe_reports_truncation_without_decoding(tmp_path):
    path = _cut(tmp_path, "cut.wav", "WAV", "PCM_16", keep_seconds=0.5)
    info = audio_io.probe_audio(path)
    assert (info.format, info.sample_rate, info.channels) == ("WAV", 16000, 1)
    assert (info.frames, info.declared_frames) == (8000, 48000)
    assert "3.00 s" in info.warning and "0.50 s" in info.warning
    whole = tmp_path / "whole.wav"
    sf.write(whole, _sine(440, 16000), 16000)
    assert audio_io.probe_audio(whole).warning is None


def test_complete_files_do_not_warn(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, fmt, subtype in [
            ("a.wav", "WAV", "PCM_16"),
            ("b.wav", "WAV", "FLOAT"),
            ("c.aiff", "AIFF", "PCM_16"),
            ("d.flac", "FLAC", "PCM_16"),
            ("e.ogg", "OGG", "VORBIS"),
        ]:
            sf.write(tmp_path / name, _sine(440, 16000), 16000, format=fmt, subtype=subtype)
            assert abs(len(load_audio(tmp_path / name, 16000)) - 16000) <= 1
            assert audio_io.probe_audio(tmp_path / name).warning is None


def test_header_without_frames_is_an_error(tmp_path):
    path = _cut(tmp_path, "hollow.wav", "WAV", "PCM_16", keep_seconds=0.0)
    for load in (lambda: load_audio(path, 16000), lambda: audio_io.probe_audio(path)):
        with pytest.raises(InputError) as excinfo:
            load()
        _one_line_error(excinfo, "hollow.wav", "no audio frames", "3.00 s")


def test_zero_byte_file_is_empty(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    for load in (
        lambda: load_audio(path, 16000),
        lambda: audio_io.probe_audio(path),
        lambda: load_audio(path, 16000, data=b""),
    ):
        with pytest.raises(InputError) as excinfo:
            load()
        _one_line_error(excinfo, "zero.wav", "empty (0 bytes)")


def test_probe_refuses_what_read_refuses(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError) as excinfo:
        audio_io.probe_audio(text)
    _one_line_error(excinfo, "notes.wav", "not a readable audio file")
    assert "Error opening" not in str(excinfo.value)
    with pytest.raises(InputError, match="not found"):
        audio_io.probe_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="directory"):
        audio_io.probe_audio(tmp_path)
