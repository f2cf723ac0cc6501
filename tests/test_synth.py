"""Synthesis functions one by one, against the ddsp 3.7 fixtures and against float64
numpy implementations of the rules in the reference notes (ddsp.md, section 6).

Each test runs on every implementation: the numpy inference path
(:mod:`ddsp_pd.inference.synth`, with each kernel backend for the oscillators) and the
differentiable TensorFlow one kept for training (:mod:`ddsp_pd.synth`), through a small
adapter that gives both the same numpy-in, numpy-out signatures.

Tolerances: controls 1e-4 x max |ref|; audio 1e-3 absolute against the library
(observed ~1e-7); the accurate harmonic mode 1e-4 absolute against float64 numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REFERENCE, REFERENCE_CHECKPOINT, needs_fixtures

from ddsp_pd.inference import kernels
from ddsp_pd.inference import synth as nsynth

SR = 16000
HOP = 64
REL_TOL = 1e-4
AUDIO_ATOL = 1e-3
CASES = ("synthetic_vibrato", "flute_melody", "sung_female")
BACKENDS = ["numpy"] + (["compiled"] if kernels.compiled_available() else [])


class NumpySynth:
    """The inference path (numpy)."""

    def __init__(self, backend: str = "numpy") -> None:
        self.backend = backend
        self.name = f"numpy-{backend}"

    exp_sigmoid = staticmethod(nsynth.exp_sigmoid)
    hz_to_midi = staticmethod(nsynth.hz_to_midi)
    harmonic_controls = staticmethod(nsynth.harmonic_controls)
    noise_magnitudes = staticmethod(nsynth.noise_magnitudes)
    upsample_window = staticmethod(nsynth.upsample_window)
    upsample_linear = staticmethod(nsynth.upsample_linear)
    frequency_impulse_response = staticmethod(nsynth.frequency_impulse_response)
    white_noise = staticmethod(nsynth.white_noise)

    def harmonic_synth(self, amps, dist, f0, hop, sr, method="window", phase_mode="accurate"):
        return nsynth.harmonic_synth(amps, dist, f0, hop, sr, method, phase_mode, self.backend)[0]

    def filtered_noise(self, mags, noise, hop, window_size=0):
        return nsynth.filtered_noise(mags, noise, hop, window_size)[0]

    def apply_reverb(self, audio, ir, add_dry=True):
        return nsynth.reverb(audio, ir, add_dry)[0]


class TfSynth:
    """The training path (TensorFlow), results as numpy arrays."""

    name = "tensorflow"

    def __init__(self) -> None:
        from ddsp_pd import synth

        self.synth = synth

    def __getattr__(self, name):
        fn = getattr(self.synth, name)

        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            if isinstance(out, tuple):
                return tuple(np.asarray(o) for o in out)
            return np.asarray(out)

        return call


@pytest.fixture(scope="module", params=[*BACKENDS, "tensorflow"])
def impl(request):
    if request.param == "tensorflow":
        pytest.importorskip("tensorflow")
        return TfSynth()
    return NumpySynth(request.param)


@pytest.fixture(scope="module")
def arrays():
    out = {}
    for case in CASES:
        with np.load(REFERENCE / "cases" / f"{case}.npz") as data:
            out[case] = {k: data[k] for k in data.files if k.startswith(("plain/", "adjust_thr05"))}
    return out


@pytest.fixture(scope="module")
def reverb_ir():
    from ddsp_pd.checkpoint import load_checkpoint

    return load_checkpoint(REFERENCE_CHECKPOINT).variables["processor_group/reverb/ir"]


def _rel(got, ref) -> float:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def _next(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[1:], x[-1:]], axis=0)


def numpy_harmonic(amps, dist, f0, hop=HOP, sr=SR, method="window") -> np.ndarray:
    """The harmonic synthesiser of ddsp.md section 6 in float64 with an exact phase."""
    amps, dist, f0 = (np.asarray(a, np.float64) for a in (amps, dist, f0))
    n_frames, n_harm = dist.shape
    m = np.arange(hop) / hop
    freq = (f0[:, None] + (_next(f0) - f0)[:, None] * m).reshape(-1)
    c = amps.reshape(-1, 1) * dist
    if method == "window":
        w = (0.5 + 0.5 * np.cos(np.pi * m))[None, :, None]
        env = c[:, None, :] * w + _next(c)[:, None, :] * (1.0 - w)
    else:
        env = c[:, None, :] + (_next(c) - c)[:, None, :] * m[None, :, None]
    env = env.reshape(n_frames * hop, n_harm)
    k = np.arange(1, n_harm + 1)
    env[freq[:, None] * k >= sr / 2] = 0.0
    phase = np.cumsum(2 * np.pi * freq / sr)
    return np.sum(env * np.sin(phase[:, None] * k), axis=-1)


# ---------------------------------------------------------------- scaling


def test_exp_sigmoid_definition(impl):
    x = np.linspace(-20, 20, 101).astype(np.float32)
    expected = 2.0 * (1.0 / (1.0 + np.exp(-x.astype(np.float64)))) ** np.log(10.0) + 1e-7
    np.testing.assert_allclose(impl.exp_sigmoid(x), expected, rtol=1e-5, atol=1e-9)


def test_hz_to_midi_maps_zero_to_zero(impl):
    got = impl.hz_to_midi(np.array([0.0, 440.0, 880.0, 261.6256], np.float32))
    np.testing.assert_allclose(got, [0.0, 69.0, 81.0, 60.0], atol=1e-4)


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_controls_match_ddsp(impl, arrays, case):
    a = arrays[case]
    amps, dist = impl.harmonic_controls(
        a["plain/raw_amps"][None],
        a["plain/raw_harmonic_distribution"][None],
        a["plain/f0_hz"][None],
        SR,
    )
    assert _rel(amps[0], a["plain/harmonic_amplitudes"]) <= REL_TOL
    assert _rel(dist[0], a["plain/harmonic_distribution"]) <= REL_TOL
    mags = impl.noise_magnitudes(a["plain/raw_noise_magnitudes"][None])
    assert _rel(mags[0], a["plain/noise_magnitudes"]) <= REL_TOL


def test_harmonics_above_nyquist_are_removed_and_rest_normalised(impl):
    raw = np.zeros((1, 3, 8), np.float32)
    f0 = np.array([[100.0, 3000.0, 0.0]], np.float32)  # 3 kHz: harmonics 3..8 >= 8 kHz
    _, dist = impl.harmonic_controls(np.zeros((1, 3, 1), np.float32), raw, f0, SR)
    dist = dist[0]
    np.testing.assert_allclose(dist.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(dist[1, 2:], 0.0)
    np.testing.assert_allclose(dist[1, :2], 0.5, rtol=1e-6)


# ---------------------------------------------------------------- upsampling


def test_upsampling_follows_ddsp_rules(impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    m = np.arange(HOP) / HOP
    nxt = np.concatenate([x[:, 1:], x[:, -1:]], axis=1)
    w = (0.5 + 0.5 * np.cos(np.pi * m))[None, None, :, None]
    expected_w = (x[:, :, None] * w + nxt[:, :, None] * (1 - w)).reshape(2, 5 * HOP, 3)
    expected_l = (x[:, :, None] + (nxt - x)[:, :, None] * m[None, None, :, None]).reshape(2, -1, 3)
    np.testing.assert_allclose(impl.upsample_window(x, HOP), expected_w, atol=1e-6)
    np.testing.assert_allclose(impl.upsample_linear(x, HOP), expected_l, atol=1e-6)


# ---------------------------------------------------------------- harmonic


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_harmonic_ddsp_mode_matches_the_library(impl, arrays, case):
    a = arrays[case]
    out = impl.harmonic_synth(
        a["plain/harmonic_amplitudes"][None],
        a["plain/harmonic_distribution"][None],
        a["plain/f0_hz"][None],
        HOP,
        SR,
        phase_mode="ddsp",
    )
    np.testing.assert_allclose(out[0], a["plain/harmonic_signal"], rtol=0, atol=AUDIO_ATOL)


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_harmonic_accurate_mode_matches_float64_numpy(impl, arrays, case):
    a = arrays[case]
    args = (a["plain/harmonic_amplitudes"], a["plain/harmonic_distribution"], a["plain/f0_hz"])
    expected = numpy_harmonic(*args)
    got = impl.harmonic_synth(*(x[None] for x in args), HOP, SR, phase_mode="accurate")
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-4)


@needs_fixtures
def test_linear_amplitude_upsampling_matches_float64_numpy(impl, arrays):
    a = arrays["sung_female"]
    args = (a["plain/harmonic_amplitudes"], a["plain/harmonic_distribution"], a["plain/f0_hz"])
    expected = numpy_harmonic(*args, method="linear")
    got = impl.harmonic_synth(*(x[None] for x in args), HOP, SR, "linear", "accurate")
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-4)


def test_harmonics_crossing_nyquist_within_a_frame_are_cut_per_sample(impl):
    """A glide across Nyquist: each harmonic stops at the sample where it reaches 8 kHz."""
    f0 = np.linspace(2000.0, 4500.0, 40).astype(np.float32)
    amps = np.full((40, 1), 0.3, np.float32)
    dist = np.full((40, 5), 0.2, np.float32)  # controls given directly: no frame-rate cut
    expected = numpy_harmonic(amps, dist, f0)
    got = impl.harmonic_synth(amps[None], dist[None], f0[None], HOP, SR, phase_mode="accurate")
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-4)


def test_accurate_phase_does_not_drift_over_a_minute(impl):
    """A steady 1 kHz tone whose 3rd harmonic carries all the energy, for 60 s.

    The accurate mode stays on the exact sine; ddsp's float32 accumulation (the
    library's behaviour) is far off by the end, which is why rendering uses the former.
    """
    n_frames = 60 * SR // HOP
    f0 = np.full((1, n_frames), 1000.0, np.float32)
    amps = np.full((1, n_frames, 1), 0.5, np.float32)
    dist = np.zeros((1, n_frames, 4), np.float32)
    dist[..., 2] = 1.0
    n = np.arange(n_frames * HOP, dtype=np.float64)
    exact = 0.5 * np.sin(2 * np.pi * 3000.0 * (n + 1) / SR)  # inclusive cumulative phase
    tail = slice(-SR, None)  # the last second
    accurate = impl.harmonic_synth(amps, dist, f0, HOP, SR, phase_mode="accurate")[0]
    assert np.max(np.abs(accurate[tail] - exact[tail])) < 1e-3
    drifting = impl.harmonic_synth(amps, dist, f0, HOP, SR, phase_mode="ddsp")[0]
    assert np.max(np.abs(drifting[tail] - exact[tail])) > 0.05


def test_bad_phase_mode_is_rejected(impl):
    with pytest.raises(ValueError, match="phase_mode"):
        impl.harmonic_synth(
            np.ones((1, 2, 1)), np.ones((1, 2, 3)), np.ones((1, 2)), HOP, SR, phase_mode="x"
        )


@needs_fixtures
def test_batch_items_are_independent(impl, arrays):
    a, b = arrays["synthetic_vibrato"], arrays["sung_female"]
    n = 400
    amps = np.stack([a["plain/harmonic_amplitudes"][:n], b["plain/harmonic_amplitudes"][:n]])
    dist = np.stack([a["plain/harmonic_distribution"][:n], b["plain/harmonic_distribution"][:n]])
    f0 = np.stack([a["plain/f0_hz"][:n], b["plain/f0_hz"][:n]])
    batch = impl.harmonic_synth(amps, dist, f0, HOP, SR)
    for i in range(2):
        single = impl.harmonic_synth(amps[i : i + 1], dist[i : i + 1], f0[i : i + 1], HOP, SR)
        np.testing.assert_allclose(batch[i], single[0], atol=1e-6)


# ---------------------------------------------------------------- noise


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("setting", ["plain", "adjust_thr05_shift"])
def test_filtered_noise_matches_the_library(impl, arrays, case, setting):
    a = arrays[case]
    p = f"{setting}/"
    out = impl.filtered_noise(a[p + "noise_magnitudes"][None], a[p + "white_noise"][None], HOP)
    np.testing.assert_allclose(out[0], a[p + "filtered_noise_signal"], rtol=0, atol=AUDIO_ATOL)


def test_flat_filter_is_a_delayed_windowed_impulse(impl):
    ir = impl.frequency_impulse_response(np.ones((1, 1, 65), np.float32))[0, 0]
    assert ir.shape == (128,)
    assert ir[64] == pytest.approx(1.0, abs=1e-6)  # causal form: the centre tap
    ir = ir.copy()
    ir[64] = 0.0
    np.testing.assert_allclose(ir, 0.0, atol=1e-6)


def test_short_window_crops_the_filter(impl):
    rng = np.random.default_rng(1)
    mags = rng.uniform(0, 1, (1, 4, 65)).astype(np.float32)
    ir = impl.frequency_impulse_response(mags, window_size=10)
    assert ir.shape[-1] == 9  # ddsp keeps 2 * ceil(10 / 2) - 1 taps
    noise = rng.uniform(-1, 1, (1, 4 * HOP)).astype(np.float32)
    out = impl.filtered_noise(mags, noise, HOP, window_size=10)
    assert out.shape == (1, 4 * HOP) and np.all(np.isfinite(out))


def test_numpy_and_tensorflow_filters_agree_for_short_windows():
    """The cropped-filter branch has no library fixture: the two paths check each other."""
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(4)
    mags = rng.uniform(0, 1, (1, 30, 65)).astype(np.float32)
    noise = rng.uniform(-1, 1, (1, 30 * HOP)).astype(np.float32)
    tf_impl = TfSynth()
    for window in (10, 33, 100):
        expected = tf_impl.filtered_noise(mags, noise, HOP, window_size=window)
        got = nsynth.filtered_noise(mags, noise, HOP, window_size=window)[0]
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_white_noise_is_seeded_uniform(impl):
    a = impl.white_noise(2, 50000, seed=7)
    b = impl.white_noise(2, 50000, seed=7)
    c = impl.white_noise(2, 50000, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() < 1.0
    assert abs(a.mean()) < 0.01 and abs(a.var() - 1 / 3) < 0.01


# ---------------------------------------------------------------- reverb


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_reverb_matches_the_library(impl, arrays, reverb_ir, case):
    a = arrays[case]
    out = impl.apply_reverb(a["plain/dry_signal"][None], reverb_ir)
    np.testing.assert_allclose(out[0], a["plain/reverb_signal"], rtol=0, atol=AUDIO_ATOL)


def test_reverb_is_causal_with_its_first_tap_masked(impl):
    rng = np.random.default_rng(2)
    ir = rng.normal(size=300).astype(np.float32)
    dry = np.zeros((1, 1000), np.float32)
    dry[0, 10] = 1.0
    wet = impl.apply_reverb(dry, ir, add_dry=False)[0]
    expected = np.zeros(1000)
    expected[11:310] = ir[1:]
    np.testing.assert_allclose(wet, expected, atol=1e-5)
    both = impl.apply_reverb(dry, ir)[0]
    np.testing.assert_allclose(both, expected + dry[0], atol=1e-5)


# ---------------------------------------------------------------- gradients (training path)


def test_gradients_reach_every_control():
    tf = pytest.importorskip("tensorflow")
    from ddsp_pd import synth

    rng = np.random.default_rng(3)
    n_frames = 20
    amps = tf.Variable(rng.uniform(0.1, 1, (1, n_frames, 1)).astype(np.float32))
    dist = tf.Variable(rng.uniform(0.1, 1, (1, n_frames, 10)).astype(np.float32))
    mags = tf.Variable(rng.uniform(0.1, 1, (1, n_frames, 65)).astype(np.float32))
    ir = tf.Variable(rng.normal(0, 0.1, 500).astype(np.float32))
    f0 = np.full((1, n_frames), 220.0, np.float32)
    noise = rng.uniform(-1, 1, (1, n_frames * HOP)).astype(np.float32)
    with tf.GradientTape() as tape:
        dry = synth.harmonic_synth(amps, dist, f0, HOP, SR) + synth.filtered_noise(mags, noise, HOP)
        loss = tf.reduce_sum(synth.apply_reverb(dry, ir) ** 2)
    grads = tape.gradient(loss, [amps, dist, mags, ir])
    for grad in grads:
        assert grad is not None
        g = grad.numpy()
        assert np.all(np.isfinite(g)) and np.any(g != 0)
