"""DDSP synthesis for inference as pure numpy functions: controls, harmonic oscillators,
filtered noise and reverb.

The rules are those of :mod:`ddsp_pd.synth` (the differentiable TensorFlow version kept
for training; both follow the reference notes, ddsp.md section 6). Shapes: frame controls
``[B, T, C]``, frame f0 ``[B, T]``, audio ``[B, N]`` with ``N = T * hop``.

Every synthesiser can run on a clip in consecutive pieces: it takes the state left by the
previous piece (oscillator phase, the frame after the piece, the noise filter's and the
reverb's tails) and returns its own, so a long clip rendered in blocks equals the clip
rendered whole (to float rounding) with bounded memory.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ddsp_pd.inference import kernels

__all__ = [
    "NOISE_PHASES",
    "PHASE_MODES",
    "exp_sigmoid",
    "fast_fft_size",
    "filtered_noise",
    "frequency_impulse_response",
    "hann_window",
    "harmonic_controls",
    "harmonic_synth",
    "hz_to_midi",
    "minimum_phase_spectra",
    "noise_magnitudes",
    "noise_reverb_ir",
    "reverb",
    "reverb_noise",
    "sigmoid",
    "upsample_linear",
    "upsample_window",
    "white_noise",
]

PHASE_MODES = ("accurate", "ddsp")
_TWO_PI = 2.0 * math.pi
_NOISE_KEY = 0x5EED
# A second stream for the noise of FilteredNoiseReverb's impulse response, so that the IR
# of a seed does not depend on the clip's length (the signal noise stream's is drawn first).
_IR_NOISE_KEY = 0x12EB
# Samples of the ddsp phase mode's [chunk, K] arrays at a time (2 MB each for 60 harmonics).
_DDSP_CHUNK = 8192


# ------------------------------------------------------------------ scaling


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float32, without overflow for any finite input."""
    x = np.asarray(x, np.float32)
    e = np.exp(-np.abs(x))  # in (0, 1]
    out = np.where(x >= 0, np.float32(1.0), e)
    out /= np.float32(1.0) + e
    return out


def exp_sigmoid(
    x: np.ndarray, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7
) -> np.ndarray:
    """ddsp's exponentiated sigmoid: ``max_value * sigmoid(x) ** ln(exponent) + threshold``."""
    s = sigmoid(x)
    np.power(s, np.float32(math.log(exponent)), out=s)
    s *= np.float32(max_value)
    s += np.float32(threshold)
    return s


def hz_to_midi(f0_hz: np.ndarray) -> np.ndarray:
    """MIDI note number of a frequency (float32); 0 Hz (unvoiced) maps to 0, as in ddsp."""
    f0 = np.asarray(f0_hz, np.float32)
    safe = np.where(f0 <= 1e-5, np.float32(1e-5), f0)
    log2 = np.float32(math.log(2.0))
    notes = np.float32(12.0) * (np.log(safe) / log2 - np.float32(math.log(440.0)) / log2)
    notes += np.float32(69.0)
    return np.where(f0 <= 0.0, np.float32(0.0), notes).astype(np.float32)


def harmonic_controls(
    raw_amps: np.ndarray,
    raw_harmonic_distribution: np.ndarray,
    f0_hz: np.ndarray,
    sample_rate: float,
    normalize_below_nyquist: bool = True,
    exponent: float = 10.0,
    max_value: float = 2.0,
    threshold: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """Decoder outputs -> (amplitudes ``[B, T, 1]``, harmonic distribution ``[B, T, K]``).

    exp_sigmoid on both, harmonics at or above Nyquist (at frame rate) zeroed, then the
    distribution normalised to sum 1 (an all-zero frame stays zero).
    """
    amps = exp_sigmoid(raw_amps, exponent, max_value, threshold)
    dist = exp_sigmoid(raw_harmonic_distribution, exponent, max_value, threshold)
    f0 = np.asarray(f0_hz, np.float32)
    if f0.ndim == dist.ndim - 1:
        f0 = f0[..., None]
    if normalize_below_nyquist:
        k = np.arange(1, dist.shape[-1] + 1, dtype=np.float32)
        dist[f0 * k >= np.float32(sample_rate / 2.0)] = 0.0
    total = dist.sum(axis=-1, keepdims=True)
    total[total == 0.0] = np.float32(1e-7)
    dist /= total
    return amps, dist


def noise_magnitudes(
    raw_noise_magnitudes: np.ndarray,
    initial_bias: float = -5.0,
    exponent: float = 10.0,
    max_value: float = 2.0,
    threshold: float = 1e-7,
) -> np.ndarray:
    """Decoder noise outputs -> filter magnitudes: exp_sigmoid(x + initial_bias)."""
    x = np.asarray(raw_noise_magnitudes, np.float32) + np.float32(initial_bias)
    return exp_sigmoid(x, exponent, max_value, threshold)


# ------------------------------------------------------------------ upsampling


def hann_window(size: int) -> np.ndarray:
    """TensorFlow's (and so ddsp's) "periodic" Hann window, float32.

    As in ``tf.signal.hann_window``, only even lengths are periodic (denominator ``size``);
    odd lengths get the symmetric window (denominator ``size - 1``), and length 1 is [1].
    """
    if size == 1:
        return np.ones(1, np.float32)
    n = np.arange(size, dtype=np.float64)
    denominator = size if size % 2 == 0 else size - 1
    return (0.5 - 0.5 * np.cos(_TWO_PI * n / denominator)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _frame_weights(hop: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample weights ``[hop]`` of a frame and of the next one. Cached (a live step of
    a few frames spent 13 us making them again): callers must not write to them (they are
    not flagged read-only, as numba would compile its kernels again for such arrays)."""
    if method == "window":
        window = hann_window(2 * hop)
        this, following = window[hop:], window[:hop]
    elif method == "linear":
        frac = np.arange(hop, dtype=np.float32) / np.float32(hop)
        this, following = np.float32(1.0) - frac, frac
    else:
        raise ValueError(f"unknown amplitude resampling method {method!r}")
    return this, following


def _with_next(x: np.ndarray, last_next: np.ndarray | None = None) -> np.ndarray:
    """``x[:, j + 1]`` for every frame j; after the last, ``last_next`` (default: held)."""
    if last_next is None:
        return np.concatenate([x[:, 1:], x[:, -1:]], axis=1)
    tail = np.asarray(last_next, x.dtype).reshape(x[:, -1:].shape)
    return np.concatenate([x[:, 1:], tail], axis=1)


def upsample_linear(x: np.ndarray, hop: int, x_next: np.ndarray | None = None) -> np.ndarray:
    """``[B, T, C]`` -> ``[B, T * hop, C]``: sample ``j hop + m`` is
    ``x[j] + (x[j + 1] - x[j]) m / hop`` (last frame held, or ``x_next`` given)."""
    x = np.asarray(x)
    if x_next is None:
        x_next = _with_next(x)
    frac = (np.arange(hop, dtype=x.dtype) / x.dtype.type(hop))[:, None]
    out = x[:, :, None, :] + (x_next - x)[:, :, None, :] * frac
    return out.reshape(x.shape[0], x.shape[1] * hop, x.shape[2])


def upsample_window(x: np.ndarray, hop: int, x_next: np.ndarray | None = None) -> np.ndarray:
    """``[B, T, C]`` -> ``[B, T * hop, C]`` with half-overlapping Hann windows (ddsp
    ``'window'``): frame j weighs ``0.5 + 0.5 cos(pi m / hop)`` at sample ``j hop + m``,
    frame j + 1 the rest."""
    x = np.asarray(x, np.float32)
    if x_next is None:
        x_next = _with_next(x)
    w_this, w_next = _frame_weights(hop, "window")
    out = x[:, :, None, :] * w_this[:, None] + x_next[:, :, None, :] * w_next[:, None]
    return out.reshape(x.shape[0], x.shape[1] * hop, x.shape[2])


# ------------------------------------------------------------------ harmonic


@dataclass(frozen=True)
class HarmonicState:
    """Where a harmonic synthesiser stopped: per batch item, the fundamental's phase
    (accurate mode, wrapped) or every harmonic's running phase (ddsp mode, float32), and
    the clip's samples made so far (ddsp mode places its envelopes by the clip's sample
    index, see :func:`_harmonic_ddsp`)."""

    phase: np.ndarray
    sample: int = 0


def harmonic_synth(
    amplitudes: np.ndarray,
    harmonic_distribution: np.ndarray,
    f0_hz: np.ndarray,
    hop: int,
    sample_rate: float,
    amp_resample_method: str = "window",
    phase_mode: str = "accurate",
    backend: str = "numpy",
    state: HarmonicState | None = None,
    f0_after: np.ndarray | None = None,
    amplitudes_after: np.ndarray | None = None,
) -> tuple[np.ndarray, HarmonicState]:
    """Harmonic synthesiser: ``[B, T, 1]``, ``[B, T, K]``, ``[B, T]`` -> ``[B, T * hop]``.

    Controls are already scaled (see :func:`harmonic_controls`). ``phase_mode`` is
    ``"accurate"`` (float64 fundamental phase; the harmonics from rotating ``exp(i theta)``;
    no drift however long the clip) or ``"ddsp"`` (a float32 running phase per harmonic,
    identical to the ddsp library including its drift on long clips). To render a clip in
    pieces, pass the previous piece's ``state`` and, for every piece but the last, the
    frame after it (``f0_after`` ``[B]``, ``amplitudes_after`` ``[B, K]`` = amplitude
    times distribution); by default the last frame is held. Returns audio and the state.
    """
    if phase_mode not in PHASE_MODES:
        raise ValueError(f"phase_mode must be one of {PHASE_MODES}, not {phase_mode!r}")
    amplitudes = np.asarray(amplitudes, np.float32)
    dist = np.asarray(harmonic_distribution, np.float32)
    f0 = np.asarray(f0_hz, np.float32)
    if f0.ndim == 3:
        f0 = f0[..., 0]
    harmonic_amps = amplitudes * dist
    batch, n_frames, _ = harmonic_amps.shape
    f0_n = _with_next(f0, None if f0_after is None else np.asarray(f0_after)[:, None])
    amps_n = _with_next(
        harmonic_amps,
        None if amplitudes_after is None else np.asarray(amplitudes_after)[:, None, :],
    )
    w_this, w_next = _frame_weights(hop, amp_resample_method)
    if phase_mode == "ddsp":
        return _harmonic_ddsp(
            harmonic_amps,
            amps_n,
            f0,
            f0_n,
            hop,
            sample_rate,
            None if amp_resample_method == "linear" else (w_this, w_next),
            state,
        )
    phases = np.zeros(batch) if state is None else np.asarray(state.phase, np.float64)
    out = np.empty((batch, n_frames * hop), np.float32)
    ends = np.empty(batch)
    for b in range(batch):
        out[b], ends[b] = kernels.harmonic_bank(
            float(phases[b]),
            f0[b],
            f0_n[b],
            harmonic_amps[b],
            amps_n[b],
            hop,
            sample_rate,
            w_this,
            w_next,
            backend,
        )
    start = 0 if state is None else state.sample
    return out, HarmonicState(ends, start + n_frames * hop)


def _linear_positions(first: int, count: int, hop: int, frame0: int) -> tuple[np.ndarray, ...]:
    """Where TensorFlow's bilinear resize (``align_corners=False``, what ddsp's linear
    ``resample`` calls) reads samples ``first .. first + count - 1`` of a clip: position
    ``float32(j) * float32(T / N)`` with ``T / N = 1 / hop``, split into the frame below
    (relative to the piece's frame ``frame0``) and the float32 fraction past it.

    The float32 position is not ``j / hop``: at hop 320 the fraction is off by up to
    2e-3 after 20 s, which ddsp's float32 phase sum turns into audible differences.
    """
    pos = np.arange(first, first + count, dtype=np.int64).astype(np.float32)
    pos *= np.float32(1.0) / np.float32(hop)
    below = np.floor(pos)
    frac = pos - below
    index = below.astype(np.int64) - frame0
    # At hops that are not a power of two times 5 a position can round just below its
    # frame; the first samples of a piece then have no frame below in it: they hold it.
    early = index < 0
    if early.any():
        index[early] = 0
        frac[early] = 0.0
    return index, frac


def _harmonic_ddsp(
    harmonic_amps: np.ndarray,
    amps_n: np.ndarray,
    f0: np.ndarray,
    f0_n: np.ndarray,
    hop: int,
    sample_rate: float,
    window_weights: tuple[np.ndarray, np.ndarray] | None,
    state: HarmonicState | None,
) -> tuple[np.ndarray, HarmonicState]:
    """ddsp's oscillator bank in ddsp's float32 arithmetic, in the same order of
    operations, so that its phase drift is reproduced sample for sample.

    Frequencies (and amplitudes, unless ``window_weights`` gives the per-sample weights
    of ddsp's ``'window'`` upsampling) are placed as TensorFlow's resize places them
    (:func:`_linear_positions`); at hops that are powers of two (64) that is exactly
    ``m / hop``.
    """
    batch, n_frames, n_harm = harmonic_amps.shape
    k = np.arange(1, n_harm + 1, dtype=np.float32)
    nyquist = np.float32(sample_rate / 2.0)
    two_pi = np.float32(_TWO_PI)
    rate = np.float32(sample_rate)
    if state is None:
        running = np.zeros((batch, n_harm), np.float32)
        sample0 = 0
    else:
        running = np.asarray(state.phase, np.float32).copy()
        sample0 = int(state.sample)
    frame0 = sample0 // hop
    out = np.empty((batch, n_frames * hop), np.float32)
    frames_per_chunk = max(1, _DDSP_CHUNK // hop)
    # Frame T of the extended arrays is the frame after the piece (or the last one held).
    fk_ext = np.concatenate([f0, f0_n[:, -1:]], axis=1)[:, :, None] * k  # [B, T + 1, K]
    amps_ext = np.concatenate([harmonic_amps, amps_n[:, -1:]], axis=1)
    for start in range(0, n_frames, frames_per_chunk):
        stop = min(start + frames_per_chunk, n_frames)
        count = (stop - start) * hop
        index, frac = _linear_positions(sample0 + start * hop, count, hop, frame0)
        frac = frac[:, None]
        lo = fk_ext[:, index]
        freq = lo + (fk_ext[:, index + 1] - lo) * frac  # [B, n, K]
        if window_weights is None:
            a_lo = amps_ext[:, index]
            amp = a_lo + (amps_ext[:, index + 1] - a_lo) * frac
        else:
            w_this, w_next = window_weights
            a = harmonic_amps[:, start:stop, None, :]
            a_n = amps_n[:, start:stop, None, :]
            amp = (a * w_this[:, None] + a_n * w_next[:, None]).reshape(batch, count, n_harm)
        amp[freq >= nyquist] = 0.0
        omega = freq * two_pi / rate
        # An inclusive float32 running sum continued from the previous chunk's last value.
        omega[:, 0] += running
        phases = np.cumsum(omega, axis=1, dtype=np.float32)
        running = phases[:, -1].copy()
        np.sin(phases, out=phases)
        phases *= amp
        out[:, start * hop : stop * hop] = phases.sum(axis=-1)
    return out, HarmonicState(running, sample0 + n_frames * hop)


# ------------------------------------------------------------------ noise


def white_noise(batch: int, n_samples: int, seed: int = 0) -> np.ndarray:
    """Uniform noise in [-1, 1), ``[batch, n_samples]`` float32, the same for the same seed.

    Drawn item after item from one stream, so a clip's noise can also be drawn in
    consecutive pieces with :func:`noise_stream` and equal this.
    """
    return noise_stream(seed).draw(batch, n_samples)


class noise_stream:  # noqa: N801 - used like a function returning a stream
    """Seeded white noise drawn in consecutive pieces (equal to one draw of the whole)."""

    def __init__(self, seed: int = 0) -> None:
        sequence = np.random.SeedSequence([int(seed) % (1 << 64), _NOISE_KEY])
        self._rng = np.random.Generator(np.random.PCG64(sequence))

    def draw(self, batch: int, n_samples: int) -> np.ndarray:
        """The next ``[batch, n_samples]`` values in [-1, 1)."""
        x = self._rng.random((batch, n_samples), dtype=np.float32)
        x *= np.float32(2.0)
        x -= np.float32(1.0)
        return x


def reverb_noise(n_samples: int, seed: int = 0) -> np.ndarray:
    """Uniform noise in [-1, 1) ``[n_samples]`` float32 for a ``FilteredNoiseReverb``'s
    impulse response: the same for the same seed, whatever the clip."""
    sequence = np.random.SeedSequence([int(seed) % (1 << 64), _IR_NOISE_KEY])
    x = np.random.Generator(np.random.PCG64(sequence)).random(n_samples, dtype=np.float32)
    x *= np.float32(2.0)
    x -= np.float32(1.0)
    return x


def noise_reverb_ir(magnitudes: np.ndarray, noise: np.ndarray, window_size: int) -> np.ndarray:
    """ddsp's ``FilteredNoiseReverb`` impulse response: ``noise`` ``[L]`` filtered, as
    ``FilteredNoise`` filters, by scaled ``magnitudes`` ``[frames, bands]`` (frames of
    ``ceil(L / frames)`` samples; a short last frame is zero-padded and cropped)."""
    mags = np.asarray(magnitudes, np.float32)
    noise = np.asarray(noise, np.float32).reshape(-1)
    length = noise.shape[0]
    frames = mags.shape[0]
    hop = -(-length // frames)
    padded = np.zeros(hop * frames, np.float32)
    padded[:length] = noise
    out, _ = filtered_noise(mags[np.newaxis], padded[np.newaxis], hop, window_size)
    return out[0, :length]


def frequency_impulse_response(magnitudes: np.ndarray, window_size: int = 0) -> np.ndarray:
    """Linear-phase FIR per frame from band magnitudes ``[..., bands]`` (frequency sampling).

    ``irfft`` of the (real) magnitudes, Hann-windowed in zero-phase form, then shifted to
    causal form: ``2 (bands - 1)`` taps, or fewer when ``0 < window_size < 2 (bands - 1)``
    (cropped as ddsp crops it).
    """
    magnitudes = np.asarray(magnitudes, np.float32)
    ir = np.fft.irfft(magnitudes, axis=-1).astype(np.float32, copy=False)
    ir_size = ir.shape[-1]
    if window_size <= 0 or window_size > ir_size:
        window_size = ir_size
    window = hann_window(window_size)
    padding = ir_size - window_size
    if padding > 0:
        half = (window_size + 1) // 2
        window = np.concatenate([window[half:], np.zeros(padding, np.float32), window[:half]])
        ir = ir * window
        first_start = ir_size - (half - 1) + 1
        return np.concatenate([ir[..., first_start:], ir[..., : half + 1]], axis=-1)
    ir = ir * np.fft.fftshift(window)
    return np.fft.fftshift(ir, axes=-1)


def _ir_size(bands: int, window_size: int) -> int:
    """Taps of :func:`frequency_impulse_response` for ``bands`` magnitudes."""
    full = 2 * (bands - 1)
    if window_size <= 0 or window_size >= full:
        return full
    return 2 * ((window_size + 1) // 2) - 1


@functools.lru_cache(maxsize=16)
def _filter_spectrum_operator(bands: int, window_size: int, fft_size: int) -> np.ndarray:
    """``[bands, 2 (fft_size // 2 + 1)]`` float32: magnitudes times this, viewed as
    complex64, is ``rfft(frequency_impulse_response(magnitudes), fft_size)``."""
    basis = np.eye(bands, dtype=np.float64)
    irs = np.fft.irfft(basis, axis=-1)
    ir_size = irs.shape[-1]
    if window_size <= 0 or window_size > ir_size:
        window_size = ir_size
    window = hann_window(window_size).astype(np.float64)
    padding = ir_size - window_size
    if padding > 0:
        half = (window_size + 1) // 2
        window = np.concatenate([window[half:], np.zeros(padding), window[:half]])
        irs = irs * window
        first_start = ir_size - (half - 1) + 1
        irs = np.concatenate([irs[:, first_start:], irs[:, : half + 1]], axis=-1)
    else:
        irs = np.fft.fftshift(irs * np.fft.fftshift(window), axes=-1)
    spectra = np.fft.rfft(irs, fft_size, axis=-1)
    interleaved = np.stack([spectra.real, spectra.imag], axis=-1).reshape(bands, -1)
    return np.ascontiguousarray(interleaved, dtype=np.float32)


#: How :func:`filtered_noise` may filter: ddsp's linear-phase FIRs, or minimum phase.
NOISE_PHASES = ("linear", "minimum")
#: Magnitude floor (relative to each frame's peak) before the logarithm: -100 dB.
_MIN_PHASE_FLOOR = 1e-5
#: Grid of the minimum-phase construction, in multiples of the FIR's taps.
_MIN_PHASE_OVERSAMPLING = 4


def _single_thread_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` on one BLAS thread. OpenBLAS's threads spin for ~0.1 s after a product
    before they sleep: two of them spinning beside the decoder's two threads on a two-core
    machine made a re-render that followed a render 45 ms (15 %) slower. A live step's few
    rows are one thread's work anyway, and skip the limit's cost (~40 us)."""
    if a.shape[0] < 64:
        return a @ b
    with kernels.single_blas_thread():
        return a @ b


def minimum_phase_spectra(magnitudes: np.ndarray, window_size: int, fft_size: int) -> np.ndarray:
    """``[frames, fft_size // 2 + 1]`` complex64: the spectra of minimum-phase FIRs whose
    magnitude responses are those of :func:`frequency_impulse_response` of ``magnitudes``
    ``[frames, bands]`` (energy up front instead of centred).

    Homomorphic construction on a grid denser than the taps and than ``fft_size`` (so the
    folded cepstrum barely aliases): log magnitude, real cepstrum, fold onto positive
    quefrencies, exponentiate; every ``dense / fft_size``-th bin of the result is the
    spectrum at ``fft_size`` (the response is as short as the FIR, so nothing wraps).
    """
    mags = np.asarray(magnitudes, np.float32)
    bands = mags.shape[-1]
    fft_size = int(fft_size)
    dense = max(_next_pow2(_MIN_PHASE_OVERSAMPLING * _ir_size(bands, window_size)), fft_size)
    operator = _filter_spectrum_operator(bands, window_size, dense)
    response = np.abs(_single_thread_product(mags, operator).view(np.complex64))
    peak = np.max(response, axis=-1, keepdims=True)
    np.maximum(response, np.maximum(peak * np.float32(_MIN_PHASE_FLOOR), np.float32(1e-30)),
               out=response)  # fmt: skip
    np.log(response, out=response)
    # Cepstrum, fold and spectrum are linear in the log magnitudes: one product (a live
    # step's two frames: 24 us instead of 42 for two FFTs and the folding).
    log_spectrum = (response @ _cepstral_fold_operator(dense, fft_size)).view(np.complex64)
    return np.exp(log_spectrum)


@functools.lru_cache(maxsize=16)
def _cepstral_fold_operator(dense: int, fft_size: int) -> np.ndarray:
    """``[dense // 2 + 1, 2 (fft_size // 2 + 1)]`` float32: log magnitudes on the dense
    grid times this, viewed as complex64, is the log spectrum of the minimum-phase
    response at ``fft_size`` (real cepstrum, folded onto positive quefrencies, back to a
    spectrum, every ``dense // fft_size``-th bin)."""
    cepstra = np.fft.irfft(np.eye(dense // 2 + 1), dense, axis=-1)
    half = dense // 2
    cepstra[:, 1:half] *= 2.0
    cepstra[:, half + 1 :] = 0.0
    spectra = np.fft.rfft(cepstra, axis=-1)[:, :: dense // fft_size]
    interleaved = np.stack([spectra.real, spectra.imag], axis=-1).reshape(spectra.shape[0], -1)
    return np.ascontiguousarray(interleaved, dtype=np.float32)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def fast_fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n``: sizes the FFT does fastest."""
    best = _next_pow2(n)
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


@dataclass(frozen=True)
class NoiseState:
    """Where a filtered-noise piece stopped: the overlap-add sums owed to the samples after
    it, ``[B, fft_size - hop]``, and how many samples of the filter's delay compensation
    are still to be dropped at the start of the clip."""

    tail: np.ndarray
    to_drop: int


def filtered_noise(
    magnitudes: np.ndarray,
    noise: np.ndarray,
    hop: int,
    window_size: int = 0,
    state: NoiseState | None = None,
    final: bool = True,
    phase: str = "linear",
) -> tuple[np.ndarray, NoiseState]:
    """Filter ``noise`` ``[B, T * hop]`` with per-frame magnitudes ``[B, T, bands]`` (ddsp
    ``FilteredNoise``: frame j of ``hop`` samples convolved with frame j's FIR by FFT,
    overlap-added, then advanced by ``(taps - 1) // 2 - 1`` samples).

    ``phase="minimum"`` filters each frame with the minimum-phase FIR of the same magnitude
    response instead (:func:`minimum_phase_spectra`) and advances nothing: the same noise
    colour with no delay, for live streams (noise has no phase anyone hears).

    In one piece (the default) the output has the input's length. In pieces, pass the
    previous piece's state and ``final=False`` for all but the last one: each piece returns
    the samples complete so far (the first ones a few samples fewer, the last one as many
    more), and together they equal the clip filtered in one piece.
    """
    magnitudes = np.asarray(magnitudes, np.float32)
    bands = magnitudes.shape[-1]
    ir_size = _ir_size(bands, window_size)
    fft_size = _next_pow2(hop + ir_size - 1)
    if phase not in NOISE_PHASES:
        raise ValueError(f"noise phase must be one of {NOISE_PHASES}, got {phase!r}")
    delay = (ir_size - 1) // 2 - 1 if phase == "linear" else 0
    noise = np.asarray(noise, np.float32)
    batch, n = noise.shape
    n_frames = n // hop
    frames = noise.reshape(batch, n_frames, hop)
    spectrum = np.fft.rfft(frames, fft_size, axis=-1)
    # The filters' spectra are linear in the magnitudes: one matrix product instead of an
    # inverse FFT, a window and a forward FFT per frame.
    operator = _filter_spectrum_operator(bands, window_size, fft_size)
    if phase == "linear":
        spectra = _single_thread_product(magnitudes.reshape(-1, bands), operator)
        spectra = spectra.view(np.complex64)
    else:
        spectra = minimum_phase_spectra(magnitudes.reshape(-1, bands), window_size, fft_size)
    spectrum *= spectra.reshape(spectrum.shape)
    pieces = np.fft.irfft(spectrum, fft_size, axis=-1).astype(np.float32, copy=False)
    segments = -(-fft_size // hop)
    if segments * hop != fft_size:
        pieces = np.pad(pieces, ((0, 0), (0, 0), (0, segments * hop - fft_size)))
    pieces = pieces.reshape(batch, n_frames, segments, hop)
    total = np.zeros((batch, (n_frames + segments - 1) * hop), np.float32)
    for s in range(segments):
        total[:, s * hop : s * hop + n] += pieces[:, :, s].reshape(batch, n)
    to_drop = delay
    if state is not None:
        total[:, : state.tail.shape[1]] += state.tail
        to_drop = state.to_drop
    tail = total[:, n:].copy()
    if final:
        # Whatever the delay compensation dropped at the start is made up here, so that
        # the pieces add up to the clip's length.
        return total[:, to_drop : n + delay], NoiseState(tail, 0)
    return total[:, min(to_drop, n) : n], NoiseState(tail, max(0, to_drop - n))


# ------------------------------------------------------------------ reverb


@dataclass(frozen=True)
class ReverbState:
    """The wet signal owed to later samples: ``[B, L - 1]``."""

    tail: np.ndarray


def reverb(
    audio: np.ndarray,
    ir: np.ndarray,
    add_dry: bool = True,
    state: ReverbState | None = None,
    block: int = 1 << 16,
) -> tuple[np.ndarray, ReverbState]:
    """Trainable reverb: ``audio`` ``[B, N]`` convolved with ``ir`` ``[L]`` (its first tap
    forced to 0), causal, truncated to N, plus the dry signal when ``add_dry``.

    FFT convolution in blocks of ``block`` samples (overlap-add), so that the transform
    size does not grow with the clip; the tail returned continues into the next piece.
    """
    audio = np.asarray(audio, np.float32)
    ir = np.array(ir, np.float32).reshape(-1)
    ir[0] = 0.0
    batch, n = audio.shape
    taps = ir.shape[0]
    fft_size = fast_fft_size(block + taps - 1)
    ir_spectrum = np.fft.rfft(ir, fft_size)
    wet = np.zeros((batch, n + taps - 1), np.float32)
    if state is not None:
        wet[:, : taps - 1] += state.tail
    for start in range(0, n, block):
        piece = audio[:, start : start + block]
        spectrum = np.fft.rfft(piece, fft_size, axis=-1)
        spectrum *= ir_spectrum
        length = piece.shape[1] + taps - 1
        wet[:, start : start + length] += np.fft.irfft(spectrum, fft_size)[:, :length]
    out = wet[:, :n]
    if add_dry:
        out += audio
    tail = wet[:, n:]
    return out, ReverbState(tail.copy())
