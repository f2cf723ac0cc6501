"""A-weighted loudness per frame, as ddsp 1.x ("v1") and ddsp >= 2.0 ("v3") compute it.

Both are pure numpy. Frames are processed in blocks so that a long clip never needs the whole
spectrogram in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable

# numpy's FFT rather than scipy's: importing scipy.fft costs a fresh `ddsp-pd render` 0.2 s.
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Squared pole frequencies (Hz^2) of the IEC 61672 A-weighting curve, as librosa uses them.
_A_POLES_SQ = np.array([12194.217, 20.598997, 107.65265, 737.86223]) ** 2

V1_N_FFT = 2048
V1_REF_DB = 20.7
V1_RANGE_DB = 120.0
V3_N_FFT = 512
V3_RANGE_DB = 80.0

_BLOCK_FRAMES = 2048
# Frames per FFT batch of StreamingLoudness: its transients stay near 4 MB (v3) / 16 MB (v1).
_STREAM_FRAMES = 256


def a_weighting_db(frequencies: np.ndarray, min_db: float | None = -80.0) -> np.ndarray:
    """A-weighting gain in dB at each frequency (Hz), floored at ``min_db`` like librosa's."""
    f_sq = np.asarray(frequencies, dtype=np.float64) ** 2
    c0, c1, c2, c3 = _A_POLES_SQ
    with np.errstate(divide="ignore"):
        weights = 2.0 + 20.0 * (
            np.log10(c0)
            + 2 * np.log10(f_sq)
            - np.log10(f_sq + c0)
            - np.log10(f_sq + c1)
            - 0.5 * np.log10(f_sq + c2)
            - 0.5 * np.log10(f_sq + c3)
        )
    return weights if min_db is None else np.maximum(min_db, weights)


def periodic_hann(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (what tf.signal.stft and librosa.stft use)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _framed_reduce(
    padded: np.ndarray,
    n_fft: int,
    hop: int,
    n_frames: int,
    window: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray],
    block_frames: int = _BLOCK_FRAMES,
) -> np.ndarray:
    """Apply ``reduce`` to |rfft(window * frame)|^2 of each frame, ``block_frames`` at a
    time (each frame's value does not depend on the block)."""
    frames = sliding_window_view(padded, n_fft)[::hop][:n_frames]
    out = np.empty(n_frames, dtype=np.float64)
    for start in range(0, n_frames, block_frames):
        block = frames[start : start + block_frames]
        spectrum = np.fft.rfft(block * window, axis=-1)
        out[start : start + len(block)] = reduce(spectrum.real**2 + spectrum.imag**2)
    return out


def _check(audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"loudness expects mono audio of shape [n], got shape {audio.shape}")
    if hop <= 0 or sample_rate <= 0:
        raise ValueError(f"hop ({hop}) and sample_rate ({sample_rate}) must be positive")
    return audio


def loudness_v3(
    audio: np.ndarray,
    sample_rate: int,
    hop: int,
    n_fft: int = V3_N_FFT,
    range_db: float = V3_RANGE_DB,
) -> np.ndarray:
    """Loudness of ddsp >= 2.0 (``compute_loudness`` with centred frames, ref_db 0).

    Frames of ``n_fft`` samples every ``hop``, frame i centred on sample ``hop * i`` (the clip
    is zero-padded by ``n_fft // 2`` on both sides), so there are ``len(audio) // hop + 1``
    frames. Each bin's power is A-weighted in linear scale and averaged over bins; the mean is
    converted to dB and clipped below at ``-range_db``.

    Returns float32 dB values, shape ``[len(audio) // hop + 1]``.
    """
    audio = _check(audio, sample_rate, hop)
    half = n_fft // 2
    padded = np.pad(audio, (half, half))
    n_frames = (len(padded) - n_fft) // hop + 1
    reduce = _v3_reducer(sample_rate, n_fft)
    power = _framed_reduce(padded, n_fft, hop, n_frames, periodic_hann(n_fft), reduce)
    return _v3_db(power, range_db)


def _v3_reducer(sample_rate: int, n_fft: int) -> Callable[[np.ndarray], np.ndarray]:
    """Per frame: the A-weighted mean of the bins' power (v3's linear-scale weighting)."""
    weighting = 10.0 ** (a_weighting_db(np.fft.rfftfreq(n_fft, 1.0 / sample_rate)) / 10.0)

    def weighted_mean_power(power: np.ndarray) -> np.ndarray:
        return np.mean(power * weighting, axis=-1)

    return weighted_mean_power


def _v3_db(power: np.ndarray, range_db: float) -> np.ndarray:
    """v3's mean power to dB, floored and clipped at ``-range_db`` (float32)."""
    floor = 10.0 ** (-range_db / 10.0)
    db = 10.0 * np.log10(np.maximum(power, floor))
    return np.maximum(db, -range_db).astype(np.float32)


def loudness_v1(
    audio: np.ndarray,
    sample_rate: int,
    hop: int,
    n_fft: int = V1_N_FFT,
    range_db: float = V1_RANGE_DB,
    ref_db: float = V1_REF_DB,
) -> np.ndarray:
    """Loudness of ddsp 1.x (``compute_loudness`` with n_fft 2048, ref_db 20.7).

    Frame i covers samples ``[hop * i, hop * i + n_fft)`` (not centred; the clip is
    zero-padded at the end). Per bin: 20 log10 |S| + A-weighting - ``ref_db``, clipped below
    at ``-range_db``; the frame's loudness is the mean over bins in dB. ddsp makes
    ceil(N / hop) frames and then trims (or pads with ``-range_db``) to floor(N / hop).

    Returns float32 dB values, shape ``[len(audio) // hop]``.
    """
    audio = _check(audio, sample_rate, hop)
    n_expected = len(audio) // hop
    n_stft = -(-len(audio) // hop)
    padded = np.pad(audio, (0, max(0, (n_stft - 1) * hop + n_fft - len(audio))))
    mean_weighted_db = _v1_reducer(sample_rate, n_fft, range_db, ref_db)
    n_frames = min(n_stft, n_expected)
    out = np.full(n_expected, -range_db, dtype=np.float64)
    if n_frames > 0:
        # The FFT stays float64: float32 round-off reaches bins 100 dB below a loud partial,
        # which are still above the clip, and moved the mean by up to 4e-3 dB.
        out[:n_frames] = _framed_reduce(
            padded, n_fft, hop, n_frames, periodic_hann(n_fft), mean_weighted_db
        )
    return out.astype(np.float32)


def _v1_reducer(
    sample_rate: int, n_fft: int, range_db: float, ref_db: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Per frame: the mean over bins of v1's A-weighted, clipped dB values."""
    a_weight = a_weighting_db(np.fft.rfftfreq(n_fft, 1.0 / sample_rate))

    def mean_weighted_db(power: np.ndarray) -> np.ndarray:
        # 20 log10 |S| with ddsp's amplitude floor of 1e-20 (power 1e-40, a float32
        # subnormal: bins that small are far below the -range_db clip anyway).
        db = 10.0 * np.log10(np.maximum(power, 1e-40).astype(np.float32))
        db = db + (a_weight - ref_db).astype(np.float32)
        return np.mean(np.maximum(db, -range_db), axis=-1, dtype=np.float64)

    return mean_weighted_db


def compute_loudness(audio: np.ndarray, sample_rate: int, hop: int, version: str) -> np.ndarray:
    """Loudness with ``n_frames = len(audio) // hop`` frames for a model of either era.

    ``version`` is ``'v1'`` (ddsp 1.x and 0.x models) or ``'v3'`` (ddsp >= 2.0); v3's extra
    final frame is dropped, as ddsp's notebooks do.
    """
    if version == "v3":
        return loudness_v3(audio, sample_rate, hop)[: len(audio) // hop]
    if version == "v1":
        return loudness_v1(audio, sample_rate, hop)
    raise ValueError(f"unknown loudness version {version!r} (expected 'v1' or 'v3')")


class StreamingLoudness:
    """:func:`compute_loudness` of audio that arrives in blocks, equal to the whole-clip values.

    Frame i of v3 is the 512-sample window centred on sample ``hop * i`` (the clip's start
    padded with ``n_fft // 2`` zeros), of v1 the 2048-sample window starting there (the end
    padded with zeros); a frame is computed once its last sample has arrived, with the same
    arithmetic as the whole clip's, so :meth:`push` results joined with :meth:`flush` equal
    ``compute_loudness(audio, sample_rate, hop, version)`` exactly. ``len(audio) // hop``
    frames in all; only the samples that later frames still need are kept.
    """

    def __init__(self, sample_rate: int, hop: int, version: str) -> None:
        if version not in ("v1", "v3"):
            raise ValueError(f"unknown loudness version {version!r} (expected 'v1' or 'v3')")
        if hop <= 0 or sample_rate <= 0:
            raise ValueError(f"hop ({hop}) and sample_rate ({sample_rate}) must be positive")
        self.sample_rate = int(sample_rate)
        self.hop = int(hop)
        self.version = version
        if version == "v3":
            self.n_fft = V3_N_FFT
            self._lead = V3_N_FFT // 2
            self._reduce = _v3_reducer(sample_rate, V3_N_FFT)
        else:
            self.n_fft = V1_N_FFT
            self._lead = 0
            self._reduce = _v1_reducer(sample_rate, V1_N_FFT, V1_RANGE_DB, V1_REF_DB)
        self._window = periodic_hann(self.n_fft)
        # _buffer[0] is padded sample _start; frame k starts at padded sample hop * k.
        self._buffer = np.zeros(self._lead, dtype=np.float64)
        self._start = 0
        self._next = 0
        self._received = 0
        self._flushed = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono samples; returns the loudness (dB, float32) of every frame now complete."""
        if self._flushed:
            raise RuntimeError("StreamingLoudness was flushed; make a new one for a new clip")
        x = _check(samples, self.sample_rate, self.hop)
        self._received += len(x)
        self._buffer = np.concatenate([self._buffer, x])
        end = self._start + len(self._buffer)
        complete = (end - self.n_fft) // self.hop + 1 if end >= self.n_fft else 0
        # Frames past len // hop are never part of the result (v3's extra frame is dropped).
        return self._emit(min(complete, self._received // self.hop))

    def flush(self) -> np.ndarray:
        """End of the clip: pad with zeros and return the remaining frames."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, np.zeros(self.n_fft, dtype=np.float64)])
        out = self._emit(self._received // self.hop)
        self._flushed = True
        return out

    def _emit(self, upto: int) -> np.ndarray:
        first = self._next
        if upto <= first:
            return np.zeros(0, dtype=np.float32)
        offset = first * self.hop - self._start
        region = self._buffer[offset : offset + (upto - first - 1) * self.hop + self.n_fft]
        values = _framed_reduce(
            region, self.n_fft, self.hop, upto - first, self._window, self._reduce, _STREAM_FRAMES
        )
        self._next = upto
        keep_from = upto * self.hop - self._start
        self._buffer = self._buffer[keep_from:]
        self._start += keep_from
        if self.version == "v3":
            return _v3_db(values, V3_RANGE_DB)
        return values.astype(np.float32)
