"""Controls of power models (DDSP-VST checkpoints and .tflite files): the power statistics of
a VST dataset_statistics.pkl, the note-on ranges of metadata.json, and auto-adjust from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REAL, VST_REFERENCE, needs_fixtures

from ddsp_pd.controls import (
    MIN_DB_POWER,
    POWER_SLOPE_LIMITS,
    ControlSettings,
    adjust_from_ranges,
    apply_controls,
    apply_power_controls,
    detect_notes,
    hz_to_midi,
    map_power_range,
    midi_to_hz,
    note_range,
    range_octave_shift,
)
from ddsp_pd.errors import ControlError, StatisticsError
from ddsp_pd.statistics import (
    DatasetStatistics,
    ModelRanges,
    PowerStatistics,
    QuantileTransform,
    load_statistics,
)

CASES = ("midi_flute", "sung_world_female")
FRAME_RATE = 50.0
# metadata.json was recomputed by ddsp from shuffled TFRecords: ~4e-6 from the pickle's values.
METADATA_TOL = 1e-5
RANGES = ModelRanges(66.0, 75.0, -41.0, -24.0, "test")


def _vst_stats() -> DatasetStatistics:
    return load_statistics(VST_REFERENCE / "checkpoint" / "dataset_statistics.pkl")


def _metadata() -> dict:
    return json.loads((VST_REFERENCE / "export" / "metadata.json").read_text())


def _case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(VST_REFERENCE / "cases" / f"{name}.npz") as z:
        return z["f0_hz_in"], z["f0_confidence_in"], z["pre/pw_db"]


# ---------------------------------------------------------------- statistics


@needs_fixtures
def test_vst_statistics_expose_power() -> None:
    stats = _vst_stats()
    assert stats.layout == "ddsp-1.6" and stats.has_power
    power = stats.power
    assert isinstance(power, PowerStatistics)
    for name, value in vars(power).items():
        key = f"{name[:-5]}_power_note" if name.endswith("_note") else f"{name}_power"
        assert value == stats.extra[key], name
    # Power sits on compute_power's scale: floored at -80 dB, note-on frames louder.
    assert power.min == -80.0
    assert power.min_note <= power.mean_min_note < power.mean_note < power.mean_max_note
    assert power.mean_max_note <= power.max_note <= 0.0


@needs_fixtures
def test_vst_quantile_transform_is_loudness_not_power() -> None:
    # Why power auto-adjust does not use it: ddsp fits it on note-on loudness.
    stats = _vst_stats()
    q = stats.quantile_transform.quantiles
    assert q[0] == pytest.approx(stats.extra["min_loudness_note"], abs=1e-5)
    assert q[-1] == pytest.approx(stats.extra["max_loudness_note"], abs=1e-5)
    assert abs(q[-1] - stats.power.max_note) > 10.0


@needs_fixtures
def test_checkpoint_ranges_equal_the_exports_metadata() -> None:
    from_pickle = _vst_stats().model_ranges()
    from_metadata = ModelRanges.from_metadata(_metadata(), source="metadata.json")
    assert from_pickle.source == "dataset_statistics.pkl"
    for attr, key in ModelRanges.FIELDS:
        assert getattr(from_pickle, attr) == _vst_stats().extra[key]
        assert getattr(from_metadata, attr) == pytest.approx(
            getattr(from_pickle, attr), abs=METADATA_TOL
        )


@needs_fixtures
def test_old_layouts_have_no_power() -> None:
    stats = load_statistics(REAL / "google_2020_flute" / "dataset_statistics.pkl")
    assert stats.power is None and not stats.has_power
    with pytest.raises(StatisticsError, match="no usable pitch and power ranges"):
        stats.model_ranges()


def test_ranges_from_metadata_are_checked() -> None:
    good = {
        "mean_min_pitch_note": 60,
        "mean_max_pitch_note": 70.5,
        "mean_min_power_note": -40.0,
        "mean_max_power_note": -20.0,
    }
    ranges = ModelRanges.from_metadata(good, "m.json")
    assert (ranges.pitch_centre, ranges.power_centre) == (65.25, -30.0)
    assert isinstance(ranges.pitch_min_note, float)
    with pytest.raises(StatisticsError, match=r"no mean_max_power_note in m\.json"):
        ModelRanges.from_metadata({k: v for k, v in good.items() if "max_power" not in k}, "m.json")
    with pytest.raises(StatisticsError, match="expected a number"):
        ModelRanges.from_metadata(good | {"mean_min_pitch_note": "60"})
    with pytest.raises(StatisticsError, match="not a finite"):
        ModelRanges.from_metadata(good | {"mean_min_power_note": float("nan")})
    with pytest.raises(StatisticsError, match="above"):
        ModelRanges.from_metadata(good | {"mean_min_power_note": -10.0})


def test_statistics_without_power_fields() -> None:
    stats = DatasetStatistics(
        layout="colab-2020",
        mean_pitch=60.0,
        quantile_transform=QuantileTransform(np.array([-60.0, -10.0]), np.array([0.0, 1.0])),
        extra={"mean_pitch": 60.0, "mean_power": -30.0},
    )
    assert stats.power is None
    with pytest.raises(StatisticsError, match="colab-2020"):
        stats.model_ranges()


# ---------------------------------------------------------------- the building blocks


def test_range_octave_shift() -> None:
    assert range_octave_shift(70.0, 66.0, 75.0) == 0.0  # inside: never moved
    assert range_octave_shift(66.0, 66.0, 75.0) == 0.0
    assert range_octave_shift(58.0, 66.0, 75.0) == 1.0  # 58 + 12 = 70 lies inside
    assert range_octave_shift(82.0, 66.0, 75.0) == -1.0
    assert range_octave_shift(42.0, 66.0, 75.0) == 2.0
    assert range_octave_shift(40.0, 66.0, 75.0) == 3.0  # 76 is 1 above, 64 is 2 below
    # Between two octaves of a range narrower than an octave: the nearer edge wins, and on a
    # tie the smaller shift.
    assert range_octave_shift(64.0, 66.0, 70.0) == 0.0  # 2 below vs 76: 6 above
    assert range_octave_shift(62.0, 66.0, 70.0) == 0.0  # 4 below vs 74: 4 above
    assert range_octave_shift(61.0, 66.0, 70.0) == 1.0  # 5 below vs 73: 3 above
    assert range_octave_shift(64.5, 66.0, 66.0) == 0.0  # 1.5 below vs 10.5 above
    assert range_octave_shift(61.0, 66.0, 66.0) == 0.0  # 5 below vs 7 above
    assert range_octave_shift(59.0, 66.0, 66.0) == 1.0  # 7 below vs 5 above
    # A range wider than an octave: the smallest shift that lands inside.
    assert range_octave_shift(50.0, 60.0, 80.0) == 1.0
    assert range_octave_shift(95.0, 60.0, 80.0) == -2.0


@pytest.mark.parametrize("seed", range(5))
def test_range_octave_shift_lands_as_near_as_any_octave(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        lo = rng.uniform(40, 80)
        hi = lo + rng.uniform(0, 20)
        pitch = rng.uniform(20, 110)
        k = range_octave_shift(pitch, lo, hi)

        def gap(p: float, lo: float = lo, hi: float = hi) -> float:
            return max(lo - p, p - hi, 0.0)

        best = min(gap(pitch + 12 * j) for j in range(-8, 9))
        assert gap(pitch + 12 * k) == best
        if gap(pitch) == best:
            assert k == 0.0


def test_note_range_is_ddsps_mean_min_and_max() -> None:
    values = np.array([1.0, 5.0, 3.0, 10.0, 20.0, 30.0, 7.0, 9.0])
    mask = np.array([True, True, False, True, True, False, False, False])
    assert note_range(values, mask, 1) == (1.0, 20.0)
    # Chunks [0:3], [3:6], [6:8]; the last has no note-on frame.
    assert note_range(values, mask, 3) == ((1.0 + 10.0) / 2, (5.0 + 20.0) / 2)
    assert note_range(values, np.zeros(8, bool), 2) is None
    assert note_range(values[:2], mask[:2], 10) == (3.0, 3.0)  # one frame per chunk


def test_power_map_hits_the_model_range() -> None:
    x = np.array([-80.0, -70.0, -60.0, -50.0, -40.0, -35.0, -30.0, -20.0])
    y, slope = map_power_range(x, (-50.0, -30.0), (-41.0, -24.0))
    assert slope == pytest.approx(17.0 / 20.0)
    np.testing.assert_allclose(y[[3, 6]], [-41.0, -24.0], atol=1e-5)
    assert y[0] == -80.0  # the floor stays put
    np.testing.assert_allclose(y[1:3], -80.0 + (x[1:3] + 80.0) * (39.0 / 30.0), atol=1e-5)
    assert np.all(np.diff(y) > 0)


def test_power_map_knee() -> None:
    x = np.array([-80.0, -65.0, -60.0, -55.0, -50.0, -30.0])
    y, slope = map_power_range(x, (-50.0, -30.0), (-41.0, -24.0), knee_db=-60.0)
    # Between the knee and the clip's low end the straight line goes on ...
    np.testing.assert_allclose(y[2:4], -41.0 + slope * (x[2:4] + 50.0), atol=1e-5)
    # ... and below the knee it bends to the floor.
    y_knee = -41.0 + slope * (-60.0 + 50.0)
    assert y[1] == pytest.approx(-80.0 + (y_knee + 80.0) * (15.0 / 20.0), abs=1e-5)
    assert y[0] == -80.0


def test_power_map_identity_and_pure_shift() -> None:
    x = np.linspace(-90.0, 0.0, 91)
    same, slope = map_power_range(x, (-41.0, -24.0), (-41.0, -24.0))
    assert slope == 1.0
    np.testing.assert_allclose(same, x, atol=1e-5)  # below -80 too: left as it is
    shifted, slope = map_power_range(x, (-35.0, -35.0), (-40.0, -20.0))
    assert slope == 1.0
    above = x >= -35.0
    np.testing.assert_allclose(shifted[above], x[above] + 5.0, atol=1e-5)


def test_power_map_slope_is_limited() -> None:
    x = np.linspace(-80.0, 0.0, 81)
    wide, slope = map_power_range(x, (-70.0, -10.0), (-41.0, -24.0))
    assert slope == POWER_SLOPE_LIMITS[0]
    centre = np.interp(-40.0, x, wide)
    assert centre == pytest.approx(-32.5, abs=1e-4)  # centres meet
    narrow, slope = map_power_range(x, (-31.0, -30.0), (-41.0, -24.0))
    assert slope == POWER_SLOPE_LIMITS[1]
    assert np.all(np.diff(wide) >= 0) and np.all(np.diff(narrow) >= 0)
    assert wide.min() >= MIN_DB_POWER and narrow.min() >= MIN_DB_POWER
    # A map that would push the clip's low end below the floor clips there.
    low, _ = map_power_range(x, (-40.0, -30.0), (-95.0, -85.0))
    assert low.min() == MIN_DB_POWER and np.all(np.diff(low) >= 0)


def _clip(n: int = 600, midi: float = 58.0, level: float = -60.0, spread: float = 10.0):
    """Two notes with rests: f0 at ``midi``, power from ``level`` to ``level + spread``."""
    t = np.arange(n)
    on = ((t // 100) % 2 == 0) & (t > 20)
    f0 = np.where(on, midi_to_hz(np.float64(midi)), 0.0).astype(np.float32)
    conf = np.where(on, 0.95, 0.05).astype(np.float32)
    pw = np.where(on, level + spread * ((t % 100) / 99.0), -80.0).astype(np.float32)
    return f0, conf, pw


def test_adjust_from_ranges_moves_a_low_quiet_clip_in() -> None:
    f0, conf, pw = _clip()
    mask, _ = detect_notes(pw, conf, 1.0, MIN_DB_POWER)
    adjustment = adjust_from_ranges(f0, pw, mask, RANGES, FRAME_RATE)
    assert adjustment.octave == 1.0
    assert adjustment.clip_pitch == pytest.approx(58.0, abs=1e-3)
    lo, hi = adjustment.clip_power_range
    assert -61.0 < lo < hi <= -50.0
    assert adjustment.mapped_power_range == pytest.approx((-41.0, -24.0), abs=1e-9)
    # Measured as it was measured on the clip (3 chunks of 4 s), the map lands on the model.
    assert note_range(adjustment.power_db, mask, 3) == pytest.approx((-41.0, -24.0), abs=1e-4)
    np.testing.assert_array_equal(adjustment.power_db[pw <= -80], pw[pw <= -80])
    with pytest.raises(ControlError, match="no note-on"):
        adjust_from_ranges(f0, pw, np.zeros_like(mask), RANGES, FRAME_RATE)
    with pytest.raises(ControlError, match="frame_rate"):
        adjust_from_ranges(f0, pw, mask, RANGES, 0.0)


def test_adjust_from_ranges_without_voiced_notes_keeps_the_octave() -> None:
    f0, conf, pw = _clip()
    mask, _ = detect_notes(pw, conf, 1.0, MIN_DB_POWER)
    adjustment = adjust_from_ranges(np.zeros_like(f0), pw, mask, RANGES, FRAME_RATE)
    assert adjustment.octave == 0.0 and adjustment.clip_pitch is None


# ---------------------------------------------------------------- the whole chain


def test_power_chain_with_ranges() -> None:
    f0, conf, pw = _clip()
    out = apply_power_controls(f0, conf, pw, ControlSettings(), RANGES, FRAME_RATE)
    assert out.level == "power" and out.report.level == "power"
    assert out.report.adjust_ran and out.report.reason == "ok"
    assert out.report.auto_octave == 1.0
    voiced = f0 > 0
    np.testing.assert_allclose(hz_to_midi(out.f0_hz[voiced]).astype(np.float64), 70.0, atol=1e-3)
    on = out.mask_on
    assert note_range(out.power_db, on, 3) == pytest.approx((-41.0, -24.0), abs=1e-4)
    # Quiet turns note-off frames down from the (unmoved) floor.
    assert np.all(out.power_db[~on & (pw <= -80)] < -80.0)
    assert "power" in out.report.message and "-41.0..-24.0 dB" in out.report.message
    with pytest.raises(AttributeError, match="power_db"):
        _ = out.loudness_db


def test_power_chain_shift_gate_and_reports() -> None:
    f0, conf, pw = _clip()
    off = ControlSettings(adjust=False, loudness_db=6.0, octave=-1.0, confidence=0.5)
    out = apply_power_controls(f0, conf, pw, off, RANGES, FRAME_RATE)
    assert out.report.reason == "disabled" and not out.report.adjust_ran
    np.testing.assert_array_equal(out.power_db, pw + np.float32(6.0))
    np.testing.assert_allclose(out.f0_hz, np.where(conf < 0.5, 0.0, f0 / 2), rtol=1e-6)
    none = apply_power_controls(
        f0, conf, pw, ControlSettings(), None, FRAME_RATE, statistics_problem="no metadata.json"
    )
    assert none.report.reason == "no statistics"
    assert none.report.message == "auto-adjust skipped: no statistics (no metadata.json)"
    np.testing.assert_array_equal(none.power_db, pw)
    quiet_conf = np.full_like(conf, 0.05)
    silent = apply_power_controls(f0, quiet_conf, pw, ControlSettings(), RANGES, FRAME_RATE)
    assert silent.report.reason == "no notes detected"
    with pytest.raises(ControlError):
        apply_power_controls(f0, conf[:-1], pw, ControlSettings(), RANGES, FRAME_RATE)
    with pytest.raises(ControlError):
        apply_power_controls(f0, conf, pw, ControlSettings(quiet=-1.0), RANGES, FRAME_RATE)


def test_autotune_on_power_models() -> None:
    f0, conf, pw = _clip(midi=70.3)
    out = apply_power_controls(f0, conf, pw, ControlSettings(autotune=1.0), RANGES, FRAME_RATE)
    assert out.report.tuning_factor is not None
    voiced = out.f0_hz > 0
    midi = hz_to_midi(out.f0_hz[voiced]).astype(np.float64)
    np.testing.assert_allclose(midi, np.round(midi), atol=1e-3)


def test_loudness_models_keep_their_path() -> None:
    f0, conf, pw = _clip()
    out = apply_controls(f0, conf, pw, ControlSettings(adjust=False, loudness_db=3.0), None)
    assert out.level == "loudness" and out.report.level == "loudness"
    assert out.report.level_range_in is None
    np.testing.assert_array_equal(out.loudness_db, pw + np.float32(3.0))
    with pytest.raises(AttributeError, match="loudness_db"):
        _ = out.power_db


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_checkpoint_and_export_adjust_alike(name: str) -> None:
    f0, conf, pw = _case(name)
    from_pickle = _vst_stats().model_ranges()
    from_metadata = ModelRanges.from_metadata(_metadata())
    a = apply_power_controls(f0, conf, pw, ControlSettings(), from_pickle, FRAME_RATE)
    b = apply_power_controls(f0, conf, pw, ControlSettings(), from_metadata, FRAME_RATE)
    assert a.report.adjust_ran and b.report.adjust_ran
    assert a.report.auto_octave == b.report.auto_octave
    np.testing.assert_array_equal(a.f0_hz, b.f0_hz)
    np.testing.assert_allclose(a.power_db, b.power_db, atol=1e-4)
    # The note-on frames now sit in the model's power range (within the slope limit).
    lo, hi = a.report.level_range_out
    on = a.mask_on
    assert from_pickle.power_min_db - 1.0 <= lo < hi <= from_pickle.power_max_db + 1.0
    assert np.median(a.power_db[on]) == pytest.approx(from_pickle.power_centre, abs=6.0)
