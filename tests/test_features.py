"""Frame features, .npz feature files, and the content-keyed feature cache."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import REFERENCE, needs_fixtures

from ddsp_pd.errors import InputError, OutputError
from ddsp_pd.features import (
    FeatureCache,
    Features,
    extract_features,
    load_features_npz,
    save_features_npz,
)
from ddsp_pd.loudness import loudness_v1, loudness_v3
from ddsp_pd.pitch import get_tracker

SR = 16000
HOP = 64
FRAME_RATE = SR / HOP
LOUDNESS_TOL_DB = 1e-3  # as in test_loudness.py


def _tone(freqs, amp=0.5):
    return (amp * np.sin(2 * np.pi * np.cumsum(freqs) / SR)).astype(np.float32)


class CountingTracker:
    """A stand-in tracker: f0 follows the clip's RMS so different audio gives different f0."""

    def __init__(self, name="counting"):
        self.name = name
        self.calls = 0

    def track(self, audio, sample_rate, frame_rate, n_frames):
        self.calls += 1
        level = float(np.sqrt(np.mean(audio**2)))
        return (
            np.full(n_frames, 100.0 + 1000.0 * level, np.float32),
            np.full(n_frames, 0.9, np.float32),
        )


# ---------------------------------------------------------------- extraction


@needs_fixtures
@pytest.mark.parametrize("version", ["v3", "v1"])
def test_extract_features_on_a_reference_case(version):
    with np.load(REFERENCE / "cases" / "synthetic_vibrato.npz") as case:
        audio = case["audio"]
        expected = case["loudness_v3_full"] if version == "v3" else case["loudness_v1"]
        given_f0 = case["f0_hz"]
    features = extract_features(audio, SR, HOP, version, "praat")
    n_frames = len(audio) // HOP
    assert features.n_frames == n_frames and features.frame_rate == FRAME_RATE
    for array in (features.f0_hz, features.f0_confidence, features.loudness_db):
        assert array.dtype == np.float32 and array.shape == (n_frames,)
    np.testing.assert_allclose(
        features.loudness_db, expected[:n_frames], rtol=0, atol=LOUDNESS_TOL_DB
    )
    if version == "v3":
        # The case's f0 is the synthesis f0 (centred frames): measured 0.99 within 50 cents.
        voiced = given_f0 > 0
        cents = 1200 * np.abs(np.log2(features.f0_hz[voiced] / given_f0[voiced]))
        assert np.mean(cents <= 50) >= 0.95


def test_v1_reads_f0_half_a_crepe_frame_later():
    """ddsp 1.x tracked uncentred 1024-sample frames: f0 frame i describes sample 64 i + 512,
    so a pitch change shows 512 / 64 = 8 frames earlier than with centred frames."""
    freqs = np.where(np.arange(SR) < SR // 2, 220.0, 330.0)
    audio = _tone(freqs)
    switch = {}
    for version in ("v3", "v1"):
        f0 = extract_features(audio, SR, HOP, version, "praat").f0_hz
        switch[version] = int(np.argmax(f0 > np.sqrt(220 * 330)))
    assert abs(switch["v3"] - switch["v1"] - 8) <= 1


def test_extract_features_lengths_and_errors():
    tracker = CountingTracker()
    audio = _tone(np.full(1000, 300.0))
    features = extract_features(audio, SR, HOP, "v3", tracker)
    assert features.n_frames == 1000 // HOP
    np.testing.assert_allclose(
        features.loudness_db, loudness_v3(audio, SR, HOP)[: 1000 // HOP], atol=0
    )
    np.testing.assert_allclose(
        extract_features(audio, SR, HOP, "v1", tracker).loudness_db,
        loudness_v1(audio, SR, HOP),
        atol=0,
    )
    with pytest.raises(InputError, match="too short"):
        extract_features(audio[: HOP - 1], SR, HOP, "v3", tracker)
    bad = audio.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        extract_features(bad, SR, HOP, "v3", tracker)
    with pytest.raises(InputError, match="mono"):
        extract_features(np.stack([audio, audio]), SR, HOP, "v3", tracker)


def test_features_validate_their_arrays():
    with pytest.raises(ValueError, match="equal length"):
        Features(np.zeros(3), np.zeros(3), np.zeros(4), 250)
    features = Features([1, 2], [0.5, 0.5], [-10, -20], 250)
    assert features.f0_hz.dtype == np.float32
    copy = features.copy()
    copy.f0_hz[0] = 99
    assert features.f0_hz[0] == 1


# ---------------------------------------------------------------- .npz files


def _features(n=50):
    rng = np.random.default_rng(1)
    return Features(
        rng.uniform(100, 500, n), rng.uniform(0, 1, n), rng.uniform(-80, 0, n), FRAME_RATE
    )


def test_npz_round_trip(tmp_path):
    features = _features()
    path = save_features_npz(tmp_path / "sub" / "f.npz", features)
    loaded = load_features_npz(path, FRAME_RATE)
    for name in ("f0_hz", "f0_confidence", "loudness_db"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(features, name))
    assert loaded.frame_rate == FRAME_RATE
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.npz"]


def test_npz_written_by_numpy_with_extra_axis(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, f0_hz=np.full((1, 20), 200.0), f0_confidence=np.ones((20, 1)),
             loudness_db=np.full(20, -30.0))  # fmt: skip
    loaded = load_features_npz(path, 100.0)
    assert loaded.n_frames == 20 and loaded.frame_rate == 100.0


def _write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


GOOD = {"f0_hz": np.full(10, 200.0), "f0_confidence": np.ones(10), "loudness_db": np.zeros(10)}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"f0_hz": None}, "lacks array"),
        ({"loudness_db": np.zeros(9)}, "differ in length"),
        ({"f0_hz": np.full((2, 10), 200.0)}, "1-D"),
        ({"f0_hz": np.float64(200.0)}, "1-D"),
        ({"loudness_db": np.array([np.nan] * 10)}, "NaN"),
        ({"f0_hz": np.full(10, -1.0)}, "negative"),
        ({"f0_confidence": np.full(10, 1.5)}, r"\[0, 1\]"),
        ({"f0_hz": np.zeros(0), "f0_confidence": np.zeros(0), "loudness_db": np.zeros(0)}, "empty"),
        ({"frame_rate": np.float64(50.0)}, "frames/s"),
        ({"f0_hz": np.array(["a"] * 10)}, "real numbers"),
    ],
)
def test_bad_npz(tmp_path, change, message):
    arrays = {**GOOD, **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with pytest.raises(InputError, match=message) as excinfo:
        load_features_npz(_write(tmp_path, **arrays), FRAME_RATE)
    assert "\n" not in str(excinfo.value) and "bad.npz" in str(excinfo.value)


def test_not_an_npz(tmp_path):
    text = tmp_path / "f.npz"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        load_features_npz(text, FRAME_RATE)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(InputError, match="single array"):
        load_features_npz(single, FRAME_RATE)
    with pytest.raises(InputError, match="not found"):
        load_features_npz(tmp_path / "missing.npz", FRAME_RATE)
    with pytest.raises(InputError, match="directory"):
        load_features_npz(tmp_path, FRAME_RATE)


def test_save_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        save_features_npz(blocker / "f.npz", _features())


# ---------------------------------------------------------------- cache


def _wav(path, freq, amp=0.5):
    sf.write(path, _tone(np.full(SR // 2, float(freq)), amp), SR, subtype="FLOAT")
    return path


def test_cache_keys_by_content_not_path(tmp_path):
    tracker = CountingTracker()
    cache = FeatureCache(max_entries=4)
    a = _wav(tmp_path / "a.wav", 300)
    first, audio = cache.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 1 and first.n_frames == len(audio) // HOP == (SR // 2) // HOP
    again, _ = cache.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 1 and again is first

    copy = tmp_path / "elsewhere" / "copy.wav"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    hit, _ = cache.get(copy, SR, HOP, "v3", tracker)
    assert tracker.calls == 1 and hit is first

    # Same path, same size, same mtime, different content: recomputed.
    stat = a.stat()
    _wav(a, 300, amp=0.1)
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert a.stat().st_size == stat.st_size
    changed, changed_audio = cache.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 2
    assert np.max(np.abs(changed.loudness_db - first.loudness_db)) > 10  # 14 dB quieter
    np.testing.assert_allclose(changed_audio, audio * 0.2, atol=1e-6)
    assert (cache.hits, cache.misses) == (2, 2)


def test_cache_key_includes_settings(tmp_path):
    tracker, other = CountingTracker(), CountingTracker("other")
    cache = FeatureCache(max_entries=8)
    a = _wav(tmp_path / "a.wav", 300)
    cache.get(a, SR, HOP, "v3", tracker)
    cache.get(a, SR, HOP, "v1", tracker)
    cache.get(a, SR, 2 * HOP, "v3", tracker)
    features, audio = cache.get(a, 2 * SR, 2 * HOP, "v3", tracker)
    assert len(audio) == SR and features.frame_rate == FRAME_RATE
    assert tracker.calls == 4
    cache.get(a, SR, HOP, "v3", other)
    assert other.calls == 1
    cache.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 4


def test_cache_is_lru(tmp_path):
    tracker = CountingTracker()
    cache = FeatureCache(max_entries=2)
    a, b, c = (_wav(tmp_path / f"{n}.wav", f) for n, f in (("a", 200), ("b", 300), ("c", 400)))
    cache.get(a, SR, HOP, "v3", tracker)
    cache.get(b, SR, HOP, "v3", tracker)
    cache.get(a, SR, HOP, "v3", tracker)  # a is now the most recent
    cache.get(c, SR, HOP, "v3", tracker)  # evicts b
    assert tracker.calls == 3
    cache.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 3
    cache.get(b, SR, HOP, "v3", tracker)
    assert tracker.calls == 4


def test_disk_cache(tmp_path, caplog):
    tracker = CountingTracker()
    cache_dir = tmp_path / "cache"
    a = _wav(tmp_path / "a.wav", 300)
    first, audio = FeatureCache(cache_dir=cache_dir).get(a, SR, HOP, "v3", tracker)
    entries = list(cache_dir.glob("*.npz"))
    assert tracker.calls == 1 and len(entries) == 1
    assert [p.name for p in cache_dir.iterdir()] == [entries[0].name]  # no temp files left

    fresh = FeatureCache(cache_dir=cache_dir)
    from_disk, disk_audio = fresh.get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 1 and fresh.hits == 1
    np.testing.assert_array_equal(from_disk.loudness_db, first.loudness_db)
    np.testing.assert_array_equal(from_disk.f0_hz, first.f0_hz)
    np.testing.assert_array_equal(disk_audio, audio)

    entries[0].write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING, logger="ddsp_pd.features"):
        again, _ = FeatureCache(cache_dir=cache_dir).get(a, SR, HOP, "v3", tracker)
    assert tracker.calls == 2 and "bad feature cache entry" in caplog.text
    np.testing.assert_array_equal(again.loudness_db, first.loudness_db)
    load_features_npz(entries[0], FRAME_RATE)  # rewritten, readable again


def test_unwritable_disk_cache_does_not_fail(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    a = _wav(tmp_path / "a.wav", 300)
    with caplog.at_level(logging.WARNING, logger="ddsp_pd.features"):
        features, _ = FeatureCache(cache_dir=blocker / "cache").get(
            a, SR, HOP, "v3", CountingTracker()
        )
    assert features.n_frames > 0 and "not written" in caplog.text


def test_cache_input_errors(tmp_path):
    cache = FeatureCache()
    with pytest.raises(InputError, match="not found"):
        cache.get(tmp_path / "missing.wav", SR, HOP, "v3", CountingTracker())
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    with pytest.raises(InputError, match="silent"):
        cache.get(silent, SR, HOP, "v3", CountingTracker())


def test_cache_accepts_a_tracker_name(tmp_path):
    a = _wav(tmp_path / "a.wav", 300)
    features, _ = FeatureCache().get(a, SR, HOP, "v3", "praat")
    assert get_tracker("praat").name == "praat"
    middle = features.f0_hz[20:-20]
    assert np.all(1200 * np.abs(np.log2(middle / 300.0)) < 20)
