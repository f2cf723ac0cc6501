"""A causal f0 tracker for live streams: YIN on the latest window of audio.

The offline trackers (:mod:`ddsp_pd.pitch`) see the whole clip; a live stream has only the
past and a few milliseconds of lookahead. :class:`StreamingYin` estimates f0 from one window
per frame that ends a fixed number of samples after the frame's centre (the analyser decides
how many, see :mod:`ddsp_pd.stream.analysis`), with YIN's cumulative mean normalised
difference (de Cheveigné and Kawahara 2002): the bottom of the first dip below
``threshold``, or within :data:`MARGIN` of the deepest dip where that is higher, refined
by parabolic interpolation. Confidence is the periodicity ``1 - d'(lag)`` rescaled from
[0.375, 1] to [0, 1]: 1 for a clean periodic frame, 0 for noise, 0.2 (the default gate) at
periodicity 0.5; silent frames (below ``silence_db``) get confidence 0. An unvoiced
frame keeps the last voiced f0 (the causal counterpart of the offline trackers'
interpolation over unvoiced frames), so the confidence gate alone decides what is silenced.

Windows of many frames are analysed in one batch, by a numba kernel
(:mod:`ddsp_pd.stream.kernels`, the default) or in numpy with FFTs (``backend="numpy"``);
the two agree to float rounding. ``docs/live.md`` records its accuracy against the
offline tracker and the fixtures' ground truth.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PERIODICITY_AT_ZERO", "StreamingYin", "yin_frames"]

#: The periodicity (1 - YIN's normalised difference) that maps to confidence 0.
PERIODICITY_AT_ZERO = 0.375
#: A dip within this much of the deepest one counts (see :func:`yin_frames`).
MARGIN = 0.1


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def yin_frames(
    windows: np.ndarray,
    sample_rate: int,
    fmin: float,
    fmax: float,
    threshold: float = 0.15,
    silence_db: float = -70.0,
    max_aperiodicity: float = 0.5,
    margin: float = MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """YIN f0 (Hz) and confidence of each window ``[F, N]``; f0 is 0 where unvoiced.

    The lags run from ``sample_rate / fmax`` to ``sample_rate / fmin`` samples; the
    difference function integrates over the newest ``N - max_lag - 1`` samples of each
    window. The chosen lag is the bottom of the first dip below ``threshold`` or within
    ``margin`` of the deepest dip, whichever is higher. A frame is unvoiced when it is
    silent (mean square below ``silence_db`` dBFS) or when no lag dips below ``threshold``
    and the deepest stays above ``max_aperiodicity`` (its confidence still says how
    periodic it is).
    """
    x = np.asarray(windows, np.float64)
    if x.ndim != 2:
        raise ValueError(f"windows must have shape [frames, samples], got {x.shape}")
    n_frames, n = x.shape
    tau_max = math.ceil(sample_rate / fmin)
    tau_min = max(2, math.floor(sample_rate / fmax))
    width = n - tau_max - 1
    if width < tau_max // 2 or tau_min >= tau_max:
        raise ValueError(f"a window of {n} samples is too short for f0 down to {fmin:g} Hz")
    if n_frames == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    # The integration window is the newest ``width`` samples, compared with the samples
    # ``tau`` before them, so that the estimate is as recent as the window allows.
    x = x[:, ::-1]
    fft_size = _next_pow2(n + width)
    spec_all = np.fft.rfft(x, fft_size, axis=1)
    spec_head = np.fft.rfft(x[:, :width], fft_size, axis=1)
    # r(tau) = sum_j x[j] x[j + tau] over the integration window (time reversed).
    r = np.fft.irfft(np.conj(spec_head) * spec_all, fft_size, axis=1)[:, : tau_max + 2]
    sq = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(x * x, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    energy_tau = sq[:, taus + width] - sq[:, taus]  # sum of x^2 over [tau, tau + width)
    energy_0 = energy_tau[:, :1]
    d = energy_0 + energy_tau - 2.0 * r
    np.maximum(d, 0.0, out=d)
    d[:, 0] = 0.0
    running = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * np.arange(1, d.shape[1]) / np.maximum(running, 1e-12)
    lags = cmnd[:, tau_min : tau_max + 1]
    # A dip counts when it is below the threshold or near the deepest one: in noise the dip
    # at the true period may stay above the threshold while a multiple of it is deeper.
    limit = np.maximum(threshold, lags.min(axis=1, keepdims=True) + margin)
    below = lags < limit
    has_dip = (lags < threshold).any(axis=1)
    first = np.argmax(below, axis=1)
    # From the first dip, go down to the bottom of that dip.
    rising = np.zeros_like(below)
    rising[:, :-1] = lags[:, 1:] >= lags[:, :-1]
    rising[:, -1] = True
    after = rising & (np.arange(lags.shape[1])[None, :] >= first[:, None])
    bottom = np.argmax(after, axis=1)
    best = bottom  # the deepest dip is always within the limit
    tau = best + tau_min
    rows = np.arange(n_frames)
    # Parabolic interpolation of the normalised difference around the chosen lag.
    left = cmnd[rows, np.maximum(tau - 1, 1)]
    mid = cmnd[rows, tau]
    right = cmnd[rows, tau + 1]
    curvature = left - 2.0 * mid + right
    shift = np.where(curvature > 1e-12, 0.5 * (left - right) / np.where(curvature > 1e-12,
                     curvature, 1.0), 0.0)  # fmt: skip
    shift = np.clip(shift, -0.5, 0.5)
    f0 = sample_rate / (tau + shift)
    # Periodicity 1 - d' rescaled so that the controls' default gate (0.2) sits at
    # periodicity 0.5, where voicing is most accurate on the fixture clips (docs/live.md).
    span = 1.0 - PERIODICITY_AT_ZERO
    confidence = np.clip((1.0 - mid - PERIODICITY_AT_ZERO) / span, 0.0, 1.0)
    mean_square = energy_0[:, 0] / width
    silent = mean_square < 10.0 ** (silence_db / 10.0)
    confidence[silent] = 0.0
    voiced = (has_dip | (mid < max_aperiodicity)) & ~silent
    f0 = np.where(voiced, f0, 0.0)
    return f0.astype(np.float32), confidence.astype(np.float32)


class StreamingYin:
    """The live tracker: :func:`yin_frames` per window, unvoiced frames holding the last
    voiced f0 (0 until the first voiced frame).

    ``window_length`` is the samples each frame's window spans (``2 sample_rate / fmin``
    by default: an integration window as long as the longest period).
    """

    name = "yin-live"

    def __init__(
        self,
        sample_rate: int,
        fmin: float = 50.0,
        fmax: float = 2000.0,
        threshold: float = 0.15,
        silence_db: float = -70.0,
        window_length: int | None = None,
        max_aperiodicity: float = 0.5,
        backend: str = "compiled",
    ) -> None:
        if not 0 < fmin < fmax:
            raise ValueError(f"need 0 < fmin < fmax, got {fmin} and {fmax}")
        self.sample_rate = int(sample_rate)
        self.fmin = float(fmin)
        self.fmax = float(min(fmax, 0.45 * sample_rate))
        self.threshold = float(threshold)
        self.silence_db = float(silence_db)
        self.max_aperiodicity = float(max_aperiodicity)
        if backend not in ("compiled", "numpy"):
            raise ValueError(f"backend must be 'compiled' or 'numpy', got {backend!r}")
        self.backend = backend
        tau_max = math.ceil(sample_rate / fmin)
        self.window_length = int(window_length or 2 * tau_max)
        # The window's newest ``width`` samples are compared with those one period earlier,
        # so for a 200 Hz tone the estimate is centred (width + period) / 2 samples before
        # the window's end: the lookahead that centres it on its frame.
        width = self.window_length - tau_max - 1
        self.preferred_lookahead = (width + round(sample_rate / 200.0)) // 2
        self.reset()

    def reset(self) -> None:
        """Forget the held f0."""
        self._last_f0 = 0.0

    def track(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f0 (Hz, held over unvoiced frames) and confidence of consecutive frames'
        windows ``[F, window_length]``."""
        args = (
            windows,
            self.sample_rate,
            self.fmin,
            self.fmax,
            self.threshold,
            self.silence_db,
            self.max_aperiodicity,
        )
        if self.backend == "compiled" and len(windows):
            from ddsp_pd.stream.kernels import yin_compiled

            f0, confidence = yin_compiled(*args, MARGIN, PERIODICITY_AT_ZERO)
        else:
            f0, confidence = yin_frames(*args)
        if f0.size == 0:
            return f0, confidence
        # Hold: each frame takes the last voiced f0 at or before it.
        voiced = f0 > 0
        idx = np.where(voiced, np.arange(f0.size), -1)
        np.maximum.accumulate(idx, out=idx)
        held = np.where(idx >= 0, f0[np.maximum(idx, 0)], np.float32(self._last_f0))
        if voiced.any():
            self._last_f0 = float(f0[np.flatnonzero(voiced)[-1]])
        return held.astype(np.float32), confidence
