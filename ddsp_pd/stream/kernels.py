"""The live f0 tracker's inner loop compiled with numba (cached on disk), and its use.

:func:`ddsp_pd.stream.pitch.yin_frames` in numpy costs ~40 array operations per call,
which for the one or two frames a live block brings is mostly interpreter overhead (about
0.25 ms a call). This is the same YIN, frame by frame in one compiled function: the
difference function directly (its ~100,000 multiply-adds per 40 ms window are quicker than
three FFTs of small arrays), then the same lag choice and confidence. ``nogil``, so the
audio callback thread is not held up while it runs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["yin_compiled"]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _yin(
    windows: np.ndarray,
    sample_rate: float,
    tau_min: int,
    tau_max: int,
    threshold: float,
    margin: float,
    silence: float,
    max_aperiodicity: float,
    periodicity_at_zero: float,
    f0_out: np.ndarray,
    conf_out: np.ndarray,
) -> None:
    n_frames, n = windows.shape
    width = n - tau_max - 1
    x = np.empty(n)
    d = np.empty(tau_max + 2)
    cmnd = np.empty(tau_max + 2)
    for f in range(n_frames):
        mean = 0.0
        for j in range(n):
            mean += windows[f, j]
        mean /= n
        for j in range(n):  # newest sample first, as the numpy version
            x[j] = windows[f, n - 1 - j] - mean
        energy = 0.0
        for j in range(width):
            energy += x[j] * x[j]
        d[0] = 0.0
        cmnd[0] = 1.0
        running = 0.0
        for tau in range(1, tau_max + 2):
            s = 0.0
            for j in range(width):
                diff = x[j] - x[j + tau]
                s += diff * diff
            d[tau] = s
            running += s
            cmnd[tau] = s * tau / max(running, 1e-12)
        deepest = tau_min
        for tau in range(tau_min, tau_max + 1):
            if cmnd[tau] < cmnd[deepest]:
                deepest = tau
        limit = max(threshold, cmnd[deepest] + margin)
        has_dip = cmnd[deepest] < threshold
        tau = deepest
        for t in range(tau_min, tau_max + 1):
            if cmnd[t] < limit:
                tau = t
                while tau < tau_max and cmnd[tau + 1] < cmnd[tau]:
                    tau += 1
                break
        left = cmnd[max(tau - 1, 1)]
        mid = cmnd[tau]
        right = cmnd[tau + 1]
        curvature = left - 2.0 * mid + right
        shift = 0.0
        if curvature > 1e-12:
            shift = min(0.5, max(-0.5, 0.5 * (left - right) / curvature))
        silent = energy / width < silence
        conf = (1.0 - mid - periodicity_at_zero) / (1.0 - periodicity_at_zero)
        conf_out[f] = 0.0 if silent else min(1.0, max(0.0, conf))
        voiced = (has_dip or mid < max_aperiodicity) and not silent
        f0_out[f] = sample_rate / (tau + shift) if voiced else 0.0


def yin_compiled(
    windows: np.ndarray,
    sample_rate: int,
    fmin: float,
    fmax: float,
    threshold: float,
    silence_db: float,
    max_aperiodicity: float,
    margin: float,
    periodicity_at_zero: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ddsp_pd.stream.pitch.yin_frames` (same arguments), compiled."""
    x = np.ascontiguousarray(windows, np.float64)
    tau_max = math.ceil(sample_rate / fmin)
    tau_min = max(2, math.floor(sample_rate / fmax))
    f0 = np.empty(x.shape[0])
    conf = np.empty(x.shape[0])
    _yin(x, float(sample_rate), tau_min, tau_max, threshold, margin,
         10.0 ** (silence_db / 10.0), max_aperiodicity, periodicity_at_zero, f0, conf)  # fmt: skip
    return f0.astype(np.float32), conf.astype(np.float32)
