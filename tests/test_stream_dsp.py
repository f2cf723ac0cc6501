"""The live engine's DSP pieces: resampler, partitioned reverb, causal analysis, live f0."""

from __future__ import annotations

import numpy as np
import pytest

from ddsp_pd.inference.synth import reverb
from ddsp_pd.loudness import loudness_v3
from ddsp_pd.power import compute_power
from ddsp_pd.stream.analysis import StreamAnalyzer
from ddsp_pd.stream.convolution import PartitionedConvolver
from ddsp_pd.stream.pitch import StreamingYin, yin_frames
from ddsp_pd.stream.resample import StreamResampler

SR = 16000


def _pieces(x: np.ndarray, rng: np.random.Generator, high: int = 700) -> list[np.ndarray]:
    """``x`` cut at random places (pieces of 0 to ``high`` samples)."""
    cuts = np.cumsum(rng.integers(0, high, size=x.size))
    cuts = cuts[cuts < x.size]
    return np.split(x, cuts)


@pytest.mark.parametrize("rates", [(48000, 16000), (16000, 48000), (44100, 16000), (16000, 44100)])
def test_resampler_is_band_limited_and_independent_of_the_pieces(rates):
    rate_in, rate_out = rates
    t = np.arange(rate_in // 2) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    rng = np.random.default_rng(0)
    whole = StreamResampler(rate_in, rate_out).process(x)
    r = StreamResampler(rate_in, rate_out)
    pieces = np.concatenate([r.process(p) for p in _pieces(x, rng)])
    assert np.array_equal(whole, pieces)
    assert whole.size == r.output_count(x.size)
    # Output sample m is the tone at time m / rate_out: no delay in the values.
    tt = np.arange(whole.size) / rate_out
    ref = 0.5 * np.sin(2 * np.pi * 440.0 * tt)
    steady = slice(100, whole.size)
    assert np.max(np.abs(whole[steady] - ref[steady])) < 1e-3
    # ... and it is computed 1 ms of input after that time (its fixed latency).
    assert r.latency_in == round(0.001 * rate_in) or abs(r.latency_in - 0.001 * rate_in) < 1


def test_resampler_rejects_an_image_above_the_lower_nyquist():
    t = np.arange(48000) / 48000
    x = np.sin(2 * np.pi * 12000.0 * t).astype(np.float32)  # above 8 kHz: must vanish
    y = StreamResampler(48000, 16000).process(x)
    assert np.sqrt(np.mean(y[200:] ** 2)) < 2e-3


def test_partitioned_reverb_equals_offline_reverb_with_a_tail_across_many_blocks():
    rng = np.random.default_rng(1)
    ir = (rng.standard_normal(16000) * np.exp(-np.arange(16000) / 4000)).astype(np.float32)
    ir[0] = 0.0
    x = np.zeros(64 * 400, np.float32)
    x[:640] = rng.standard_normal(640)  # a short burst, then 1.5 s of tail only
    conv = PartitionedConvolver(ir, 64)
    out = np.concatenate([conv.process(p) for p in _pieces(x, rng, 300)])
    ref, _ = reverb(x[np.newaxis], ir, add_dry=False)
    n = out.size
    assert n >= x.size - 64
    scale = np.max(np.abs(ref))
    assert np.max(np.abs(out - ref[0, :n])) < 1e-5 * scale
    tail = ref[0, 16000:n]  # long after the burst: still there, and still equal
    assert np.max(np.abs(tail)) > 1e-3 * scale
    assert np.max(np.abs(out[16000:n] - tail)) < 1e-5 * scale


@pytest.mark.parametrize(
    ("level", "hop", "reference"),
    [
        ("loudness_v3", 64, lambda x: loudness_v3(x, SR, 64)),
        ("power", 320, lambda x: compute_power(x, SR, 50, 1024)),
    ],
)
def test_streaming_level_equals_the_offline_frames(level, hop, reference):
    rng = np.random.default_rng(2)
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.linspace(0, 1, SR)).astype(np.float32)
    x += 0.01 * rng.standard_normal(SR).astype(np.float32)
    analyzer = StreamAnalyzer(SR, hop, level, StreamingYin(SR))
    frames = [analyzer.push(p) for p in _pieces(x, rng, 400)]
    got = np.concatenate([f.level_db for f in frames])
    firsts = [f.first for f in frames if f.n_frames]
    assert firsts == sorted(firsts)
    ref = reference(x)
    assert got.size == analyzer.frames_ready(SR)
    np.testing.assert_allclose(got, ref[: got.size], atol=1e-4)


def test_live_f0_of_a_tone_a_glide_noise_and_silence():
    t = np.arange(SR) / SR
    tone = 0.4 * np.sin(2 * np.pi * 330.0 * t)
    sweep_hz = 200.0 * 2 ** (t * 1.0)  # one octave up over the second
    glide = 0.4 * np.sin(2 * np.pi * np.cumsum(sweep_hz) / SR)
    noise = 0.3 * np.random.default_rng(3).standard_normal(SR)
    x = np.concatenate([tone, glide, noise, np.zeros(SR)]).astype(np.float32)
    tracker = StreamingYin(SR)
    analyzer = StreamAnalyzer(SR, 64, "loudness_v3", tracker)
    frames = analyzer.push(x)
    f0, conf = frames.f0_hz, frames.f0_confidence
    fr = 250
    steady = slice(fr // 5, fr - 5)
    assert np.max(np.abs(1200 * np.log2(f0[steady] / 330.0))) < 10
    assert np.min(conf[steady]) > 0.9
    glide_frames = np.arange(fr + fr // 5, 2 * fr - 5)
    expected = 200.0 * 2 ** ((glide_frames - fr) / fr)
    cents = 1200 * np.log2(f0[glide_frames] / expected)
    # Causal windows see a little of the past: a glide reads at most 15 cents late.
    assert np.median(np.abs(cents)) < 15
    assert np.median(conf[2 * fr + 10 : 3 * fr]) < 0.2  # noise: under the default gate
    silent = slice(3 * fr + 20, 4 * fr - 5)
    assert np.all(conf[silent] == 0.0)
    assert np.all(f0[silent] == f0[3 * fr + 20])  # unvoiced frames hold the last f0
    assert np.all(f0 > 0)


def test_yin_needs_a_window_long_enough_for_the_lowest_pitch():
    with pytest.raises(ValueError, match="too short"):
        yin_frames(np.zeros((1, 300)), SR, 50.0, 2000.0)


def test_compiled_and_numpy_yin_agree():
    rng = np.random.default_rng(7)
    t = np.arange(640) / SR
    windows = [0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6)) for hz in (60, 147, 440, 1500)]
    windows += [rng.standard_normal(640) * 0.2, np.zeros(640), windows[1] + rng.normal(0, 0.2, 640)]
    windows = np.array(windows, np.float32)
    compiled = StreamingYin(SR, backend="compiled").track(windows)
    plain = StreamingYin(SR, backend="numpy").track(windows)
    np.testing.assert_allclose(compiled[0], plain[0], rtol=1e-4)
    np.testing.assert_allclose(compiled[1], plain[1], atol=1e-4)
    assert compiled[0][2] == pytest.approx(440.0, rel=2e-3)
