"""The controls against the ddsp 3.7 reference fixture, plus the rules ddsp-pd adds.

Parity: for every clip and control setting in ``index.json``, starting from the case's
``f0_hz``, ``f0_confidence`` and ``loudness_v3_full[:n_frames]`` with the checkpoint's
statistics and min_db -80, we reproduce ``S/mask_on`` and ``S/auto_octave`` exactly,
``S/tuning_factor`` to 1e-6, ``S/note_on_value`` to 1e-5 relative, and ``S/f0_hz`` and
``S/loudness_db`` to 1e-4 relative (plus 1e-4 Hz / 1e-4 dB absolute for values near 0).
The fixture was made without ddsp-pd's confidence gate, so parity runs use gate 0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import REFERENCE, REFERENCE_CHECKPOINT, fixture_params, reference_index

import ddsp_pd.controls as controls_module
from ddsp_pd.controls import (
    CONTROL_RANGES,
    F0_MAX_HZ,
    AdjustReport,
    ControlSettings,
    apply_controls,
    apply_quiet,
    auto_octave_shift,
    auto_tune,
    best_major_key,
    confidence_gate,
    count_segments,
    detect_notes,
    fit_quantile_transform,
    hz_to_midi,
    midi_to_hz,
    shift_loudness,
    shift_octave,
    tuning_factor,
)
from ddsp_pd.errors import ControlError
from ddsp_pd.statistics import DatasetStatistics, QuantileTransform, load_statistics

MIN_DB = -80.0
F0_RTOL, F0_ATOL = 1e-4, 1e-4  # Hz
LD_RTOL, LD_ATOL = 1e-4, 1e-4  # dB
NOTE_RTOL, NOTE_ATOL = 1e-5, 1e-6

INDEX = reference_index()
SETTINGS = {s["name"]: s for s in INDEX.get("control_settings", [])}
CASES = fixture_params(sorted(INDEX.get("arrays", {})))


@pytest.fixture(scope="module")
def stats(fixtures_dir) -> DatasetStatistics:
    return load_statistics(REFERENCE_CHECKPOINT / "dataset_statistics.pkl")


@pytest.fixture(scope="module")
def cases(fixtures_dir) -> dict[str, dict[str, np.ndarray]]:
    wanted = ("mask_on", "note_on_value", "auto_octave", "tuning_factor", "f0_hz", "loudness_db")
    out = {}
    for case in CASES:
        with np.load(REFERENCE / "cases" / f"{case}.npz") as z:
            arrays = {k: z[k] for k in ("f0_hz", "f0_confidence", "loudness_v3_full")}
            for name in SETTINGS:
                for key in wanted:
                    arrays[f"{name}/{key}"] = z[f"{name}/{key}"]
        out[case] = arrays
    return out


def _settings(s: dict, confidence: float = 0.0) -> ControlSettings:
    return ControlSettings(
        octave=s["pitch_shift"],
        loudness_db=s["loudness_shift"],
        confidence=confidence,
        adjust=s["adjust"],
        quiet=s["quiet"],
        autotune=s["autotune"],
        note_threshold=s["threshold"],
    )


def _inputs(z: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = z["f0_hz"].size
    return z["f0_hz"], z["f0_confidence"], z["loudness_v3_full"][:n]


# --------------------------------------------------------------------------------------
# Parity with the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", fixture_params(sorted(SETTINGS)))
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(cases, stats, case: str, setting: str) -> None:
    z, s = cases[case], SETTINGS[setting]
    out = apply_controls(*_inputs(z), _settings(s), stats, MIN_DB)
    ref = {k.split("/", 1)[1]: v for k, v in z.items() if k.startswith(setting + "/")}

    np.testing.assert_array_equal(out.mask_on, ref["mask_on"])
    np.testing.assert_allclose(
        out.note_on_value, ref["note_on_value"], rtol=NOTE_RTOL, atol=NOTE_ATOL
    )
    assert out.report.auto_octave == float(ref["auto_octave"])
    reported_tuning = out.report.tuning_factor
    if s["adjust"] and s["autotune"] > 0:
        assert reported_tuning == pytest.approx(float(ref["tuning_factor"]), abs=1e-6)
    else:  # the reference stores 0 when get_tuning_factor was not called
        assert reported_tuning is None
        assert float(ref["tuning_factor"]) == 0.0
    np.testing.assert_allclose(out.f0_hz, ref["f0_hz"], rtol=F0_RTOL, atol=F0_ATOL)
    np.testing.assert_allclose(out.loudness_db, ref["loudness_db"], rtol=LD_RTOL, atol=LD_ATOL)
    assert out.f0_hz.dtype == np.float32 and out.loudness_db.dtype == np.float32

    report = out.report
    assert report.adjust_requested == s["adjust"]
    if s["adjust"]:
        assert report.adjust_ran and report.reason == "ok"
        assert report.notes_detected == int(ref["mask_on"].sum())
        assert report.note_segments >= 1
    else:
        assert not report.adjust_ran and report.reason == "disabled"
        assert report.notes_detected == 0


@pytest.mark.parametrize("case", CASES)
def test_either_mean_pitch_field_reproduces_auto_octave(cases, stats, case: str) -> None:
    """The fixture cannot tell ``mean_pitch`` from ``mean_pitch_note`` (see statistics.py)."""
    z = cases[case]
    f0, conf, ld = _inputs(z)
    for name in ("adjust_default", "adjust_thr05_shift"):
        mask, _ = detect_notes(ld, conf, SETTINGS[name]["threshold"], MIN_DB)
        for field in ("mean_pitch", "mean_pitch_note"):
            octave = auto_octave_shift(f0, mask, stats.extra[field])
            assert octave == float(z[f"{name}/auto_octave"]), field


@pytest.mark.parametrize("setting", fixture_params(sorted(SETTINGS)))
@pytest.mark.parametrize("case", CASES)
def test_confidence_gate_only_zeroes_low_confidence_frames(
    cases, stats, case: str, setting: str
) -> None:
    """With the default gate 0.2 the result is the reference except f0 = 0 below the gate."""
    z = cases[case]
    f0, conf, ld = _inputs(z)
    out = apply_controls(f0, conf, ld, _settings(SETTINGS[setting], 0.2), stats, MIN_DB)
    ref_f0 = z[f"{setting}/f0_hz"]
    low = conf < 0.2
    assert low.any() and not low.all()
    assert np.all(out.f0_hz[low] == 0.0)
    np.testing.assert_allclose(out.f0_hz[~low], ref_f0[~low], rtol=F0_RTOL, atol=F0_ATOL)
    np.testing.assert_allclose(
        out.loudness_db, z[f"{setting}/loudness_db"], rtol=LD_RTOL, atol=LD_ATOL
    )
    # In this fixture every unvoiced frame has confidence 0.05, so the gate is a no-op
    # unless autotune moved unvoiced frames off 0 Hz (MIDI 0 -> 8.18 Hz).
    if SETTINGS[setting]["autotune"] == 0 or not SETTINGS[setting]["adjust"]:
        np.testing.assert_array_equal(out.f0_hz == 0, ref_f0 == 0)
    else:
        assert np.any(ref_f0[low] > 0)


# --------------------------------------------------------------------------------------
# When auto-adjust cannot run
# --------------------------------------------------------------------------------------


def test_no_statistics_is_reported(cases) -> None:
    f0, conf, ld = _inputs(cases[CASES[0]])
    out = apply_controls(f0, conf, ld, ControlSettings(confidence=0.0), None, MIN_DB)
    assert out.report == AdjustReport(
        adjust_requested=True, adjust_ran=False, reason="no statistics"
    )
    assert "no statistics" in out.report.message
    why = apply_controls(f0, conf, ld, ControlSettings(), None, statistics_problem="refused")
    assert why.report.reason == "no statistics" and why.report.detail == "refused"
    assert why.report.message == "auto-adjust skipped: no statistics (refused)"
    np.testing.assert_array_equal(out.f0_hz, f0)
    np.testing.assert_array_equal(out.loudness_db, ld)
    assert not out.mask_on.any()


def test_no_notes_is_reported(stats) -> None:
    n = 600
    f0 = np.full(n, 220.0, dtype=np.float32)
    conf = np.full(n, 0.05, dtype=np.float32)  # far below the 0.7 reference confidence
    ld = np.full(n, -30.0, dtype=np.float32)
    out = apply_controls(f0, conf, ld, ControlSettings(confidence=0.0), stats, MIN_DB)
    assert out.report.reason == "no notes detected"
    assert not out.report.adjust_ran and out.report.notes_detected == 0
    assert out.report.note_segments == 0 and out.report.auto_octave == 0.0
    assert out.note_on_value.max() > 0  # detection ran; nothing passed the threshold
    np.testing.assert_array_equal(out.loudness_db, ld)


def test_disabled_beats_missing_statistics() -> None:
    z = np.zeros(10, dtype=np.float32)
    out = apply_controls(z, z, z, ControlSettings(adjust=False), None)
    assert out.report.reason == "disabled" and out.report.message == "auto-adjust: off"


def test_empty_clip(stats) -> None:
    e = np.zeros(0, dtype=np.float32)
    out = apply_controls(e, e, e, ControlSettings(), stats)
    assert out.report.reason == "no notes detected"
    assert out.f0_hz.size == 0


# --------------------------------------------------------------------------------------
# Loudness and pitch controls change what the decoder sees
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("adjust", [False, True])
def test_loudness_shift_reaches_output(cases, stats, adjust: bool) -> None:
    f0, conf, ld = _inputs(cases["flute_melody"])
    base = apply_controls(f0, conf, ld, ControlSettings(adjust=adjust), stats)
    louder = apply_controls(f0, conf, ld, ControlSettings(adjust=adjust, loudness_db=7.5), stats)
    np.testing.assert_allclose(louder.loudness_db - base.loudness_db, 7.5, atol=1e-4)
    np.testing.assert_array_equal(louder.f0_hz, base.f0_hz)


def test_quiet_lowers_only_note_off_frames(cases, stats) -> None:
    f0, conf, ld = _inputs(cases["sung_female"])
    a = apply_controls(f0, conf, ld, ControlSettings(quiet=0.0), stats)
    b = apply_controls(f0, conf, ld, ControlSettings(quiet=30.0), stats)
    on = a.mask_on
    np.testing.assert_array_equal(a.loudness_db[on], b.loudness_db[on])
    expected = 30.0 * (1.0 - a.note_on_value[~on])
    np.testing.assert_allclose(a.loudness_db[~on] - b.loudness_db[~on], expected, atol=1e-4)


def test_octave_shift_and_clip() -> None:
    f0 = np.array([0.0, 100.0, 440.0, 3000.0], dtype=np.float32)
    up = shift_octave(f0, 1.0)
    np.testing.assert_allclose(up[:3], f0[:3] * 2)
    assert up[3] == np.float32(F0_MAX_HZ)
    assert shift_octave(f0, -4.0)[0] == 0.0
    assert pytest.approx(float(midi_to_hz(110.0))) == F0_MAX_HZ


def test_autotune_output_is_clipped(stats) -> None:
    """ddsp-pd clips after autotune too: a note just under the limit snaps up to MIDI 110+."""
    n = 400
    f0 = np.full(n, float(midi_to_hz(109.9)), dtype=np.float32)
    conf = np.ones(n, dtype=np.float32)
    ld = np.full(n, -20.0, dtype=np.float32)
    settings = ControlSettings(autotune=1.0, confidence=0.0)
    out = apply_controls(f0, conf, ld, settings, dataclasses.replace(stats, mean_pitch=110.0))
    assert out.report.adjust_ran
    assert out.f0_hz.max() <= np.float32(F0_MAX_HZ)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def test_pitch_units() -> None:
    hz = np.array([0.0, -5.0, 440.0, 880.0, 261.6256], dtype=np.float32)
    midi = hz_to_midi(hz)
    assert midi.dtype == np.float32
    np.testing.assert_allclose(midi, [0.0, 0.0, 69.0, 81.0, 60.0], atol=1e-4)
    np.testing.assert_allclose(midi_to_hz(midi[2:]), hz[2:], rtol=1e-6)
    assert float(midi_to_hz(0.0)) == pytest.approx(8.1757989)  # not mapped back to 0


def test_detect_notes_smoothing_window() -> None:
    """One confident frame spreads over 40 frames: 20 before it and 19 after (SAME padding)."""
    n, k = 200, 100
    conf = np.zeros(n, dtype=np.float32)
    conf[k] = 1.0
    ld = np.full(n, -20.0, dtype=np.float32)
    _, value = detect_notes(ld, conf, 1.0, MIN_DB)
    nonzero = np.flatnonzero(value)
    assert nonzero[0] == k - 20 and nonzero[-1] == k + 19
    # value = smooth * (ld - min_db) / ((mean - min_db) * 0.49) with smooth = 1/40
    np.testing.assert_allclose(value[nonzero], 1 / 40 / 0.49, rtol=1e-6)


def test_fit_quantile_transform_round_trip() -> None:
    rng = np.random.default_rng(3)
    ld = rng.normal(-30, 8, 2500).astype(np.float32)
    mask = rng.random(2500) > 0.3
    clip, same = fit_quantile_transform(ld, mask, None)
    assert same is None
    assert clip.n_quantiles == 1000  # capped at 1000 quantiles
    _, back = fit_quantile_transform(ld, mask, clip)
    np.testing.assert_allclose(back, ld, atol=1e-3)
    small, _ = fit_quantile_transform(ld[:50], mask[:50])
    assert small.n_quantiles == int(mask[:50].sum())


def test_fit_quantile_transform_maps_onto_dataset(stats) -> None:
    rng = np.random.default_rng(4)
    ld = rng.normal(-50, 5, 3000).astype(np.float32)
    mask = np.ones(3000, dtype=bool)
    mask[::4] = False
    _, out = fit_quantile_transform(ld, mask, stats.quantile_transform)
    np.testing.assert_array_equal(out[~mask], ld[~mask])
    # The note-on frames now follow the dataset's distribution: same quantiles.
    q = stats.quantile_transform
    for p in (0.1, 0.5, 0.9):
        target = float(np.interp(p, q.references, q.quantiles))
        assert np.quantile(out[mask], p) == pytest.approx(target, abs=0.5)


def test_auto_octave_rounding_quirk() -> None:
    """floor above 1.5 octaves, ceil otherwise: a gap in (0, 1.5] becomes +1 octave."""
    f0 = np.full(10, 440.0, dtype=np.float32)  # MIDI 69
    mask = np.ones(10, dtype=bool)
    for gap_octaves, expected in [
        (0.1, 1.0),
        (1.0, 1.0),
        (1.5, 2.0),
        (1.6, 1.0),
        (2.9, 2.0),
        (-0.1, 0.0),
        (-0.9, 0.0),
        (-1.1, -1.0),
    ]:
        got = auto_octave_shift(f0, mask, 69.0 + 12.0 * gap_octaves)
        assert got == expected, gap_octaves
    assert auto_octave_shift(f0, np.zeros(10, dtype=bool), 20.0) == 0.0


def test_apply_quiet_raises_off_frames_above_one() -> None:
    ld = np.zeros(3, dtype=np.float32)
    out = apply_quiet(ld, np.array([True, False, False]), np.array([2.0, 0.25, 1.5]), 20.0)
    np.testing.assert_allclose(out, [0.0, -15.0, 10.0])


def test_tuning_factor_finds_a_detuned_grid() -> None:
    rng = np.random.default_rng(5)
    notes = np.repeat(rng.integers(55, 80, 30), 20).astype(np.float64)
    midi = (notes + 0.23 + rng.normal(0, 0.01, notes.size)).astype(np.float32)
    conf = np.ones(midi.size, dtype=np.float32)
    mask = np.ones(midi.size, dtype=bool)
    assert tuning_factor(midi, conf, mask) == pytest.approx(0.23, abs=0.015)
    # One frame: no note changes to count; the nearest 1-cent candidate to its own offset.
    offset = float(midi[0] - np.round(midi[0]))
    assert tuning_factor(midi[:1], conf[:1], mask[:1]) == pytest.approx(offset, abs=0.0051)
    assert tuning_factor(midi, conf, np.zeros_like(mask)) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_best_major_key_equals_the_search_over_every_note(dtype) -> None:
    """The key search looks only at the notes beside each value; it must give the very
    distances (and so the very key) of the minimum over all 70 notes of each scale, for
    values inside, below and above the scales' range, on ties and with unvoiced frames."""
    rng = np.random.default_rng(11)
    scales = controls_module._SCALES
    for trial in range(60):
        n = int(rng.integers(1, 300))
        midi = (rng.random(n) * 160.0 - 15.0).astype(dtype)
        if trial % 3 == 0:
            midi = np.round(midi * 2.0) / 2.0  # exactly between two notes
        midi[rng.random(n) < 0.1] = 0.0
        brute = np.min(np.abs(midi[:, None, None] - scales[None]), axis=-1)
        fast = controls_module._scale_distances(midi)
        assert fast.dtype == brute.dtype
        np.testing.assert_array_equal(fast, brute)
        mask = rng.random(n) < 0.8
        expected = int(np.argmin(np.mean(brute[mask], axis=0))) if mask.any() else 0
        assert best_major_key(midi, mask) == expected


def test_auto_tune_snaps_to_major_scale() -> None:
    d_major = np.array([62, 64, 66, 67, 69, 71, 73], dtype=np.float64)
    midi = np.repeat(d_major, 5) + 0.3
    mask = np.ones(midi.size, dtype=bool)
    assert best_major_key(midi, mask) == 2  # D
    full = auto_tune(midi, 0.0, mask, amount=1.0)
    np.testing.assert_allclose(full, np.repeat(d_major, 5))
    half = auto_tune(midi, 0.0, mask, amount=0.5)
    np.testing.assert_allclose(half, np.repeat(d_major, 5) + 0.15)
    # The tuning factor is ignored unless chromatic.
    np.testing.assert_array_equal(auto_tune(midi, 0.4, mask, 1.0), full)
    chroma = auto_tune(midi, 0.3, mask, amount=1.0, chromatic=True)
    np.testing.assert_allclose(chroma, midi, atol=1e-9)


def test_confidence_gate_and_segments() -> None:
    f0 = np.array([100, 200, 300, 400], dtype=np.float32)
    conf = np.array([0.1, 0.2, 0.5, 0.19], dtype=np.float32)
    np.testing.assert_array_equal(confidence_gate(f0, conf, 0.2), [0, 200, 300, 0])
    np.testing.assert_array_equal(confidence_gate(f0, conf, 0.0), f0)
    assert count_segments([False, True, True, False, True]) == 2
    assert count_segments([True]) == 1 and count_segments([]) == 0
    np.testing.assert_allclose(shift_loudness(f0, -10), f0 - 10)


def test_mismatched_lengths() -> None:
    with pytest.raises(ControlError, match="different lengths"):
        apply_controls(np.zeros(5), np.zeros(4), np.zeros(5), ControlSettings(), None)


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


def test_default_settings() -> None:
    s = ControlSettings().validate()
    assert (s.octave, s.loudness_db, s.confidence, s.adjust) == (0.0, 0.0, 0.2, True)
    assert (s.quiet, s.autotune, s.note_threshold) == (20.0, 0.0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.octave = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(CONTROL_RANGES))
def test_settings_ranges(name: str) -> None:
    lo, hi = CONTROL_RANGES[name]
    ControlSettings(**{name: lo}).validate()
    ControlSettings(**{name: hi}).validate()
    # Messages name the control as users set it: --loudness, /ddsp/loudness.
    label = {"loudness_db": "loudness"}.get(name, name)
    for bad in (lo - 0.01, hi + 0.01, math.nan, math.inf, "1", True, None):
        with pytest.raises(ControlError, match=rf"^{label} ") as excinfo:
            ControlSettings(**{name: bad}).validate()
        assert "loudness_db" not in str(excinfo.value)


def test_adjust_must_be_boolean() -> None:
    with pytest.raises(ControlError, match="adjust"):
        ControlSettings(adjust="yes").validate()  # type: ignore[arg-type]


def test_apply_controls_validates() -> None:
    z = np.zeros(4, dtype=np.float32)
    with pytest.raises(ControlError, match="octave"):
        apply_controls(z, z, z, ControlSettings(octave=9), None)


def test_quantile_transform_is_ours() -> None:
    # apply_controls only needs the DatasetStatistics interface: a hand-made one works.
    q = QuantileTransform.fit(np.linspace(-60, -10, 100))
    s = DatasetStatistics(layout="colab-2020", mean_pitch=60.0, quantile_transform=q)
    n = 300
    f0 = np.full(n, 261.63, dtype=np.float32)
    conf = np.ones(n, dtype=np.float32)
    ld = np.linspace(-40, -20, n).astype(np.float32)
    out = apply_controls(f0, conf, ld, ControlSettings(), s)
    assert out.report.reason == "ok" and out.report.auto_octave == 0.0
    assert out.loudness_db[out.mask_on].min() >= -60.0 - 1e-4
