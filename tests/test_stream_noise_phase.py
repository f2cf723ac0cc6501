"""Minimum-phase noise for live streams: the linear-phase filter's magnitudes with no
delay, the harmonic part untouched, pieces that join, and 3.9 ms less latency."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ddsp_pd.controls import ControlSettings
from ddsp_pd.errors import ControlError
from ddsp_pd.inference import synth as isynth
from ddsp_pd.kinds.controls import SynthControls
from ddsp_pd.stream.controls import LiveControls
from ddsp_pd.stream.engine import EngineSettings, FramePipeline, StreamEngine
from ddsp_pd.stream.models import open_live_model
from ddsp_pd.stream.synth import StreamSynth

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
NO_ADJUST = ControlSettings(adjust=False, confidence=0.0)


@pytest.fixture(scope="module")
def model():
    return open_live_model(DEFAULT)


@pytest.fixture(scope="module")
def controls(model) -> SynthControls:
    """600 frames of the shipped model's controls for a wandering tone."""
    rng = np.random.default_rng(5)
    f0 = (220.0 * 2 ** np.cumsum(rng.normal(0, 0.01, 600))).astype(np.float32)
    level = np.clip(-30 + np.cumsum(rng.normal(0, 0.5, 600)), -80, 0).astype(np.float32)
    pipe = FramePipeline(model, LiveControls(model.frame_rate, model.min_db, NO_ADJUST))
    got: list[SynthControls] = []
    pipe.on_controls = got.append
    pipe.run(f0, np.ones_like(f0), level)
    return got[0]


def _db(x: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(x, 1e-12))


def test_minimum_phase_filters_keep_the_magnitudes_and_put_the_energy_first(controls):
    mags = controls.noise_magnitudes
    taps = 2 * (mags.shape[1] - 1)
    linear = isynth.frequency_impulse_response(mags)
    minimum = np.fft.irfft(isynth.minimum_phase_spectra(mags, 0, 256), 256, axis=-1)
    # As short as the linear-phase FIR: nothing past its taps.
    assert np.max(np.abs(minimum[:, taps:])) < 1e-5 * np.max(np.abs(minimum))
    grid = 2048
    want, got = (np.abs(np.fft.rfft(x, grid, axis=-1)) for x in (linear, minimum))
    audible = _db(want) - _db(np.max(want, axis=-1, keepdims=True)) > -60.0
    assert np.max(np.abs(_db(got) - _db(want))[audible]) < 0.05  # dB: far below what anyone hears
    # Minimum phase: of all filters with this magnitude response, the most energy soonest.
    early = np.cumsum(minimum[:, :taps] ** 2, axis=-1)
    late = np.cumsum(linear**2, axis=-1)
    assert np.all(early >= late - 1e-4 * late[:, -1:])
    assert np.all(early[:, taps // 4] > 0.9 * early[:, -1])


def test_unknown_noise_phase_is_refused():
    with pytest.raises(ValueError, match="noise phase"):
        isynth.filtered_noise(np.ones((1, 1, 65), np.float32), np.ones((1, 64)), 64, phase="x")
    with pytest.raises(ControlError, match="noise phase"):
        EngineSettings(noise_phase="zero").validate()


def _synth(model, ctl: SynthControls, phase: str, cuts: list[int] | None = None) -> tuple:
    synth = StreamSynth(model.synth, ctl.n_noise_bands, None, 3, "accurate", "numpy", phase)
    bounds = [0, *(cuts or []), ctl.n_frames]
    pieces = [synth.push(_frames(ctl, a, b)) for a, b in itertools.pairwise(bounds)]
    return np.concatenate(pieces), synth.delay


def _frames(ctl: SynthControls, start: int, stop: int) -> SynthControls:
    return SynthControls(*(getattr(ctl, name)[start:stop] for name in _FIELDS))


_FIELDS = ("f0_hz", "amplitudes", "harmonic_distribution", "noise_magnitudes")


def _without(ctl: SynthControls, part: str) -> SynthControls:
    if part == "noise":
        return replace(ctl, noise_magnitudes=np.zeros_like(ctl.noise_magnitudes))
    return replace(ctl, amplitudes=np.zeros_like(ctl.amplitudes))


def test_the_harmonic_part_is_the_linear_streams_without_its_delay(model, controls):
    harmonic = _without(controls, "noise")
    soon, none = _synth(model, harmonic, "minimum")
    later, delay = _synth(model, harmonic, "linear")
    assert none == 0 and delay == 62  # 65 bands: half the 128-tap FIR
    n = later.size - delay
    scale = float(np.max(np.abs(later)))
    assert np.max(np.abs(soon[:n] - later[delay:])) < 1e-6 * scale


def test_the_noise_has_the_linear_noises_spectrum(model, controls):
    """The same white noise through both filters: equal power in every band of 250 Hz
    over the clip (a filter with the wrong magnitudes would be off by decibels)."""
    noise = _without(controls, "harmonic")
    soon, _ = _synth(model, noise, "minimum")
    later, delay = _synth(model, noise, "linear")
    n = later.size - delay
    spectra = [np.abs(np.fft.rfft(x[: n - n % 1024].reshape(-1, 1024), axis=-1)) ** 2
               for x in (soon[:n], later[delay:])]  # fmt: skip
    bands = [s.sum(axis=0)[1:].reshape(-1, 16).sum(axis=-1) for s in spectra]
    loud = bands[1] > 1e-6 * bands[1].max()
    assert loud.sum() > 20
    assert np.max(np.abs(10 * np.log10(bands[0][loud] / bands[1][loud]))) < 0.5
    # ... but not the same samples: the phase changed.
    assert np.max(np.abs(soon[:n] - later[delay:])) > 0.01 * np.max(np.abs(later))


def test_minimum_phase_pieces_join_into_the_whole(model, controls):
    whole, _ = _synth(model, controls, "minimum")
    cuts = sorted(np.random.default_rng(2).choice(np.arange(1, 599), 40, replace=False))
    pieces, _ = _synth(model, controls, "minimum", [int(c) for c in cuts])
    np.testing.assert_allclose(pieces, whole, atol=1e-6 * float(np.max(np.abs(whole))))


def test_live_streams_are_sooner_by_the_filter_delay(model):
    rate = 48000
    soon = StreamEngine(model, rate, EngineSettings(), backend="numpy")
    later = StreamEngine(model, rate, EngineSettings(noise_phase="linear"), backend="numpy")
    assert soon.describe_latency()["noise_filter_ms"] == 0.0
    assert later.describe_latency()["noise_filter_ms"] == pytest.approx(62 / 16.0)
    assert later.latency_samples - soon.latency_samples == 62 * rate // 16000
