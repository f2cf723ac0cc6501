"""Frame power of DDSP-VST models (ddsp's compute_power and OnlineF0PowerPreprocessor scaling)
against the ddsp 3.7 VST fixture, and power features: extraction, .npz files, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import VST_REFERENCE, needs_fixtures

from ddsp_pd.errors import InputError
from ddsp_pd.features import (
    FeatureCache,
    Features,
    extract_features,
    feature_frames,
    load_features_npz,
    save_features_npz,
)
from ddsp_pd.power import (
    StreamingPower,
    compute_power,
    power_hop,
    scale_f0_hz,
    scale_power_db,
)

CASES = ("midi_flute", "sung_world_female")
# Preprocessor outputs (pw_scaled, f0_scaled) to 1e-6 absolute. pw_db itself is compared
# relative to its size: ddsp's float32 sums land within ~2 float32 steps (1.6e-7 relative,
# 1e-5 dB near -80 dB) of the exact value, so 1e-6 absolute dB is below float32 resolution.
SCALED_ATOL = 1e-6
PW_DB_RTOL = 1e-6


def _gin_rates() -> tuple[int, float, int]:
    """sample_rate, frame_rate and frame_size from the fixture's operative gin."""
    text = (VST_REFERENCE / "checkpoint" / "operative_config-0.gin").read_text()
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return int(values["sample_rate"]), float(values["frame_rate"]), int(values["frame_size"])


def _case(name: str) -> dict[str, np.ndarray]:
    with np.load(VST_REFERENCE / "cases" / f"{name}.npz") as z:
        return {key: z[key] for key in z.files}


# ---------------------------------------------------------------- against ddsp 3.7


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_power_and_scaling_match_ddsp(name: str) -> None:
    sample_rate, frame_rate, frame_size = _gin_rates()
    case = _case(name)
    audio = case["audio"]
    pw_db = compute_power(audio, sample_rate, frame_rate, frame_size)
    hop = power_hop(sample_rate, frame_rate)
    assert pw_db.dtype == np.float32
    assert pw_db.shape == case["pre/pw_db"].shape == (len(audio) // hop + 1,)
    np.testing.assert_allclose(pw_db, case["pre/pw_db"], rtol=PW_DB_RTOL, atol=1e-6)
    # The fixture's own float64 numpy recomputation.
    np.testing.assert_allclose(pw_db, case["check/pw_db_numpy"], rtol=0, atol=1e-6)
    # ddsp's rms, to float32 precision.
    rms = np.sqrt(10.0 ** (pw_db.astype(np.float64) / 10.0))
    loud = pw_db > -80
    np.testing.assert_allclose(rms[loud], case["check/rms_energy"][loud], rtol=1e-6)
    np.testing.assert_allclose(scale_power_db(pw_db), case["pre/pw_scaled"], atol=SCALED_ATOL)
    np.testing.assert_array_equal(case["pre/f0_hz"], case["f0_hz_in"])
    np.testing.assert_allclose(
        scale_f0_hz(case["f0_hz_in"]), case["pre/f0_scaled"], atol=SCALED_ATOL
    )


@needs_fixtures
def test_the_tolerance_tells_frame_sizes_apart() -> None:
    sample_rate, frame_rate, frame_size = _gin_rates()
    case = _case(CASES[0])
    wrong = compute_power(case["audio"], sample_rate, frame_rate, frame_size - 64)
    assert not np.allclose(wrong, case["pre/pw_db"], rtol=PW_DB_RTOL, atol=1e-6)


@needs_fixtures
def test_power_features_of_a_fixture_clip() -> None:
    sample_rate, frame_rate, frame_size = _gin_rates()
    case = _case(CASES[1])
    hop = power_hop(sample_rate, frame_rate)
    features = extract_features(
        case["audio"],
        sample_rate,
        hop,
        "v3",
        _FixedTracker(),
        level="power",
        power_frame_size=frame_size,
    )
    assert features.level == "power" and features.level_name == "power_db"
    assert features.n_frames == len(case["pre/pw_db"])
    assert features.frame_rate == frame_rate
    np.testing.assert_allclose(features.power_db, case["pre/pw_db"], rtol=PW_DB_RTOL, atol=1e-6)


@needs_fixtures
def test_the_export_metadata_names_the_same_rates() -> None:
    metadata = json.loads((VST_REFERENCE / "export" / "metadata.json").read_text())
    assert (metadata["sample_rate"], metadata["frame_rate"], metadata["frame_size"]) == (
        _gin_rates()
    )


# ---------------------------------------------------------------- definition


def test_frames_are_centred_and_unwindowed() -> None:
    sr, rate, size = 16000, 50.0, 1024
    hop = 320
    audio = np.zeros(10 * hop, np.float32)
    audio[1000] = 1.0
    pw = compute_power(audio, sr, rate, size)
    assert len(pw) == len(audio) // hop + 1
    # Frame i covers [hop i - size/2, hop i + size/2).
    covers = [hop * i - size // 2 <= 1000 < hop * i + size // 2 for i in range(len(pw))]
    np.testing.assert_array_equal(pw > -80, covers)
    # No window: the impulse weighs the same in every frame that holds it.
    np.testing.assert_allclose(pw[pw > -80], 10 * np.log10(1 / size), atol=1e-5)


def test_levels_floor_and_reference() -> None:
    sr, rate, size = 16000, 50.0, 1024
    t = np.arange(sr) / sr
    # 25 whole periods per 1024-sample frame, so every interior frame holds mean(x^2) = A^2 / 2.
    sine = (0.5 * np.sin(2 * np.pi * 25 * sr / size * t)).astype(np.float32)
    pw = compute_power(sine, sr, rate, size)
    interior = pw[3:-3]  # frames that lie wholly inside the clip
    np.testing.assert_allclose(interior, 10 * np.log10(0.5**2 / 2), atol=1e-3)
    np.testing.assert_allclose(
        compute_power(sine, sr, rate, size, ref_db=6.0)[3:-3], interior - 6.0, atol=1e-5
    )
    silence = compute_power(np.zeros(3200, np.float32), sr, rate, size)
    np.testing.assert_array_equal(silence, -80.0)
    quiet = compute_power(np.full(3200, 1e-4, np.float32), sr, rate, size, range_db=60.0)
    np.testing.assert_array_equal(quiet, -60.0)
    # Rates other than the VST defaults come from the arguments.
    assert len(compute_power(sine, 48000, 100.0, 2048)) == len(sine) // 480 + 1


def test_integer_audio_and_short_clips() -> None:
    assert len(compute_power(np.zeros(5, np.int16), 16000, 50, 1024)) == 1
    assert len(compute_power(np.zeros(0, np.float32), 16000, 50, 1024)) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_size": 1023}, "even"),
        ({"frame_size": 256}, "larger than frame_size"),
        ({"frame_rate": 48.0}, "does not divide"),
        ({"padding": "same"}, "padding"),
        ({"range_db": 0.0}, "range_db"),
        ({"sample_rate": 0}, "must be > 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    args = {"sample_rate": 16000, "frame_rate": 50.0, "frame_size": 1024} | kwargs
    with pytest.raises(ValueError, match=match):
        compute_power(np.zeros(1000, np.float32), **args)


def test_bad_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        compute_power(np.zeros((2, 100)), 16000, 50, 1024)
    bad = np.zeros(1000, np.float32)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_power(bad, 16000, 50, 1024)


def test_scaling() -> None:
    np.testing.assert_allclose(scale_power_db([-80.0, -40.0, 0.0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(scale_f0_hz([0.0, -5.0, 440.0, 880.0]), [0, 0, 69 / 127, 81 / 127])
    assert scale_f0_hz([440.0]).dtype == np.float32


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_gives_the_offline_frames(seed: int) -> None:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(16000 * 2 + int(rng.integers(0, 320))) * 0.1).astype(np.float32)
    expected = compute_power(audio, 16000, 50, 1024)
    stream = StreamingPower(16000, 50, 1024)
    parts, i = [], 0
    while i < len(audio):
        k = int(rng.integers(0, 1500))
        parts.append(stream.push(audio[i : i + k]))
        i += k
    parts.append(stream.flush())
    assert stream.frames_emitted == len(expected)
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=0, atol=1e-5)


def test_streaming_latency_and_reset() -> None:
    stream = StreamingPower(16000, 50, 1024)
    assert len(stream.push(np.zeros(511, np.float32))) == 0
    assert len(stream.push(np.zeros(1, np.float32))) == 1  # frame 0 needs samples 0..511
    assert len(stream.push(np.zeros(320, np.float32))) == 1
    stream.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(np.zeros(10, np.float32))
    assert len(stream.flush()) == 0
    stream.reset()
    tone = np.full(3200, 0.25, np.float32)
    out = np.concatenate([stream.push(tone), stream.flush()])
    np.testing.assert_allclose(out, compute_power(tone, 16000, 50, 1024), atol=1e-5)


# ---------------------------------------------------------------- power features


class _FixedTracker:
    name = "fixed"

    def track(self, audio, sample_rate, frame_rate, n_frames):
        return np.full(n_frames, 220.0, np.float32), np.full(n_frames, 0.9, np.float32)


def _power_features(n: int = 40) -> Features:
    rng = np.random.default_rng(3)
    return Features(
        rng.uniform(100, 500, n), rng.uniform(0, 1, n), rng.uniform(-80, 0, n), 50.0, "power"
    )


def test_power_features_name_their_level() -> None:
    features = _power_features()
    assert features.level_name == "power_db"
    np.testing.assert_array_equal(features.power_db, features.level_db)
    with pytest.raises(AttributeError, match="power_db"):
        _ = features.loudness_db
    copy = features.copy()
    assert copy.level == "power"
    loud = Features([1.0], [0.5], [-10.0], 250)
    assert loud.level == "loudness" and loud.loudness_db[0] == -10.0
    with pytest.raises(AttributeError, match="loudness_db"):
        _ = loud.power_db
    with pytest.raises(ValueError, match="unknown level"):
        Features([1.0], [0.5], [-10.0], 250, "volume")


def test_extract_power_features_frames() -> None:
    audio = (0.3 * np.sin(2 * np.pi * 330 * np.arange(16000) / 16000)).astype(np.float32)
    features = extract_features(
        audio, 16000, 320, "v3", _FixedTracker(), level="power", power_frame_size=1024
    )
    assert features.n_frames == feature_frames(len(audio), 320, "power") == 51
    np.testing.assert_array_equal(features.power_db, compute_power(audio, 16000, 50, 1024))
    assert feature_frames(len(audio), 320) == 50
    with pytest.raises(ValueError, match="power_frame_size"):
        extract_features(audio, 16000, 320, "v3", _FixedTracker(), level="power")
    with pytest.raises(InputError, match="too short"):
        extract_features(
            audio[:100], 16000, 320, "v3", _FixedTracker(), level="power", power_frame_size=1024
        )


def test_power_npz_round_trip(tmp_path) -> None:
    features = _power_features()
    path = save_features_npz(tmp_path / "vst.npz", features)
    with np.load(path) as z:
        assert sorted(z.files) == ["f0_confidence", "f0_hz", "frame_rate", "power_db"]
    loaded = load_features_npz(path, 50.0, "power")
    assert loaded.level == "power"
    for name in ("f0_hz", "f0_confidence", "power_db"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(features, name))


def test_npz_of_the_other_level_is_refused_clearly(tmp_path) -> None:
    power_file = save_features_npz(tmp_path / "vst.npz", _power_features())
    with pytest.raises(InputError, match=r"holds power_db.*takes loudness_db"):
        load_features_npz(power_file, 50.0)
    loud = Features(np.full(5, 200.0), np.full(5, 0.5), np.full(5, -30.0), 50.0)
    loud_file = save_features_npz(tmp_path / "solo.npz", loud)
    with pytest.raises(InputError, match=r"holds loudness_db.*takes power_db"):
        load_features_npz(loud_file, 50.0, "power")
    neither = tmp_path / "neither.npz"
    np.savez(neither, f0_hz=np.ones(3), f0_confidence=np.ones(3))
    with pytest.raises(InputError, match=r"lacks array.*power_db"):
        load_features_npz(neither, 50.0, "power")


def test_npz_with_both_levels_gives_the_one_asked_for(tmp_path) -> None:
    path = tmp_path / "both.npz"
    np.savez(
        path,
        f0_hz=np.full(4, 300.0),
        f0_confidence=np.full(4, 0.9),
        loudness_db=np.full(4, -10.0),
        power_db=np.full(4, -30.0),
    )
    assert load_features_npz(path, 50.0, "power").power_db[0] == -30.0
    assert load_features_npz(path, 50.0).loudness_db[0] == -10.0


def test_cache_keys_power_apart_and_keeps_loudness_keys() -> None:
    loud = FeatureCache.key("abc", 16000, 320, "v3", "praat")
    assert loud == FeatureCache.key("abc", 16000, 320, "v3", "praat", level="loudness")
    power = FeatureCache.key("abc", 16000, 320, "v3", "praat", level="power", power_frame_size=1024)
    other = FeatureCache.key("abc", 16000, 320, "v3", "praat", level="power", power_frame_size=512)
    assert len({loud, power, other}) == 3


def test_cache_serves_power_features(tmp_path) -> None:
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
    wav = tmp_path / "a.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    cache_dir = tmp_path / "cache"
    tracker = _FixedTracker()
    first, _ = FeatureCache(cache_dir=cache_dir).get(
        wav, 16000, 320, "v3", tracker, level="power", power_frame_size=1024
    )
    assert first.level == "power" and first.n_frames == 8000 // 320 + 1
    fresh = FeatureCache(cache_dir=cache_dir)
    again, _ = fresh.get(wav, 16000, 320, "v3", tracker, level="power", power_frame_size=1024)
    assert fresh.hits == 1  # from the disk entry
    assert again.level == "power"
    np.testing.assert_array_equal(again.power_db, first.power_db)
    loud, _ = FeatureCache(cache_dir=cache_dir).get(wav, 16000, 320, "v3", tracker)
    assert loud.level == "loudness" and loud.n_frames == 8000 // 320
    with pytest.raises(ValueError, match="power_frame_size"):
        FeatureCache().get(wav, 16000, 320, "v3", tracker, level="power")
