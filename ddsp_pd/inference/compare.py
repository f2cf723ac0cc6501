"""How far apart two renders sound: the measure behind ``precision="fast"``'s bound."""

from __future__ import annotations

import numpy as np

__all__ = ["FAST_BOUND_DB", "spectral_distance_db"]

#: The most a ``precision="fast"`` render may differ from the exact one
#: (:func:`spectral_distance_db`, mean), a tenth of the smallest level change people
#: notice in music (about 1 dB).
FAST_BOUND_DB = 0.3


def spectral_distance_db(
    audio: np.ndarray,
    reference: np.ndarray,
    n_fft: int = 1024,
    hop: int = 256,
    floor_db: float = -80.0,
) -> tuple[float, float]:
    """``(mean, max)`` absolute difference in dB of two signals' short-time spectra.

    Hann windows of ``n_fft`` every ``hop`` samples over the common length; magnitudes
    below ``floor_db`` relative to the reference's largest are raised to that floor, so
    that bins nobody hears (and whose dB figures are noise) do not count.
    """
    a = np.asarray(audio, np.float64).reshape(-1)
    b = np.asarray(reference, np.float64).reshape(-1)
    n = min(a.size, b.size)
    if n < n_fft:
        raise ValueError(f"signals of {n} samples are shorter than one window ({n_fft})")
    window = np.hanning(n_fft)

    def magnitudes(x: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(x[:n], n_fft)[::hop]
        return np.abs(np.fft.rfft(frames * window, axis=1))

    mag_a, mag_b = magnitudes(a), magnitudes(b)
    peak = float(mag_b.max())
    if peak == 0.0:
        peak = float(mag_a.max()) or 1.0
    floor = peak * 10.0 ** (floor_db / 20.0)
    diff = np.abs(
        20.0 * np.log10(np.maximum(mag_a, floor)) - 20.0 * np.log10(np.maximum(mag_b, floor))
    )
    return float(diff.mean()), float(diff.max())
