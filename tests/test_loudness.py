"""Loudness v1 and v3 against the values ddsp itself computed for the reference cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REFERENCE, needs_fixtures

from ddsp_pd import loudness
from ddsp_pd.loudness import a_weighting_db, compute_loudness, loudness_v1, loudness_v3

CASES = sorted((REFERENCE / "cases").glob("*.npz"))
HOP = 64
SAMPLE_RATE = 16000
# ddsp computed in float32 (v3: TensorFlow); we compute in float64 and round to float32.
# Measured difference: 7.6e-6 dB on every case (one float32 ulp at ~60 dB).
TOLERANCE_DB = 1e-3


def _case(path):
    with np.load(path) as data:
        return {k: data[k] for k in ("audio", "loudness_v3_full", "loudness_v1")}


@needs_fixtures
def test_fixture_cases_exist():
    assert len(CASES) >= 3, f"no reference cases in {REFERENCE / 'cases'}"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_v3_matches_ddsp(path):
    case = _case(path)
    got = loudness_v3(case["audio"], SAMPLE_RATE, HOP)
    assert got.dtype == np.float32
    assert got.shape == case["loudness_v3_full"].shape == (len(case["audio"]) // HOP + 1,)
    np.testing.assert_allclose(got, case["loudness_v3_full"], rtol=0, atol=TOLERANCE_DB)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_v1_matches_ddsp(path):
    case = _case(path)
    got = loudness_v1(case["audio"], SAMPLE_RATE, HOP)
    assert got.dtype == np.float32
    assert got.shape == case["loudness_v1"].shape == (len(case["audio"]) // HOP,)
    np.testing.assert_allclose(got, case["loudness_v1"], rtol=0, atol=TOLERANCE_DB)


@needs_fixtures
@pytest.mark.parametrize("version", ["v1", "v3"])
def test_compute_loudness_has_n_frames(version):
    case = _case(CASES[0])
    audio = case["audio"]
    got = compute_loudness(audio, SAMPLE_RATE, HOP, version)
    assert got.shape == (len(audio) // HOP,)
    ref = case["loudness_v3_full"][: len(got)] if version == "v3" else case["loudness_v1"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOLERANCE_DB)
    with pytest.raises(ValueError, match="loudness version"):
        compute_loudness(audio, SAMPLE_RATE, HOP, "v2")


def _symmetric_hann(n):
    return np.hanning(n)


def _max_error(fn, key):
    return max(
        float(np.max(np.abs(fn(_case(p)["audio"], SAMPLE_RATE, HOP) - _case(p)[key])))
        for p in CASES
    )


@needs_fixtures
@pytest.mark.parametrize(
    "fn,key", [(loudness_v3, "loudness_v3_full"), (loudness_v1, "loudness_v1")]
)
def test_a_different_window_no_longer_matches(monkeypatch, fn, key):
    """The periodic Hann window is essential: the symmetric one must break the match."""
    monkeypatch.setattr(loudness, "periodic_hann", _symmetric_hann)
    assert _max_error(fn, key) > 10 * TOLERANCE_DB


@needs_fixtures
@pytest.mark.parametrize(
    "fn,key", [(loudness_v3, "loudness_v3_full"), (loudness_v1, "loudness_v1")]
)
def test_no_weighting_no_longer_matches(monkeypatch, fn, key):
    monkeypatch.setattr(loudness, "a_weighting_db", lambda f, min_db=-80.0: np.zeros_like(f))
    assert _max_error(fn, key) > 10 * TOLERANCE_DB


@needs_fixtures
def test_v1_needs_the_minus_80_db_floor(monkeypatch):
    """v1 averages dB over bins, so the floor on the DC bin's weighting shows (v3 averages
    power, where the DC bin's 1e-8 weight is invisible)."""
    monkeypatch.setattr(loudness, "a_weighting_db", lambda f, min_db=-80.0: a_weighting_db(f, -60))
    assert _max_error(loudness_v1, "loudness_v1") > 10 * TOLERANCE_DB


def test_a_weighting_equals_librosa():
    librosa = pytest.importorskip("librosa")
    freqs = np.fft.rfftfreq(2048, 1 / 44100)
    with np.errstate(divide="ignore"):
        expected = librosa.A_weighting(freqs, min_db=-80.0)
    np.testing.assert_allclose(a_weighting_db(freqs), expected, rtol=0, atol=1e-9)


def test_silence_sits_at_the_floor():
    zeros = np.zeros(10 * HOP, np.float32)
    assert np.all(loudness_v3(zeros, SAMPLE_RATE, HOP) == -loudness.V3_RANGE_DB)
    assert np.all(loudness_v1(zeros, SAMPLE_RATE, HOP) == -loudness.V1_RANGE_DB)


def test_lengths_for_ragged_and_short_input():
    rng = np.random.default_rng(0)
    for n in (1, 63, 64, 65, 1000, 5000):
        audio = rng.standard_normal(n).astype(np.float32) * 0.1
        assert loudness_v3(audio, SAMPLE_RATE, HOP).shape == (n // HOP + 1,)
        assert loudness_v1(audio, SAMPLE_RATE, HOP).shape == (n // HOP,)
        assert compute_loudness(audio, SAMPLE_RATE, HOP, "v3").shape == (n // HOP,)


@needs_fixtures
def test_blocks_do_not_change_the_result(monkeypatch):
    """Long clips are processed in blocks of frames; block edges must be seamless."""
    audio = _case(CASES[0])["audio"]
    whole_v3 = loudness_v3(audio, SAMPLE_RATE, HOP)
    whole_v1 = loudness_v1(audio, SAMPLE_RATE, HOP)
    monkeypatch.setattr(loudness, "_BLOCK_FRAMES", 7)
    np.testing.assert_array_equal(loudness_v3(audio, SAMPLE_RATE, HOP), whole_v3)
    np.testing.assert_array_equal(loudness_v1(audio, SAMPLE_RATE, HOP), whole_v1)
