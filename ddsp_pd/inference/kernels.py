"""The inner loops of inference, each in two interchangeable backends.

``"numpy"`` is always available and costs nothing to start. ``"compiled"`` runs the same
maths as fused loops compiled by numba (:mod:`ddsp_pd.inference.compiled`); it is several
times faster per render but its first use in a process costs about half a second (numba's
start-up, even with its on-disk cache), so it pays in a long-running server or on long
inputs, not in a one-shot render of a short clip. ``"auto"`` means compiled where that
pays (:func:`auto_backend`) and numpy where numba is not installed. Both backends agree to
float32 rounding (tests/test_inference.py).

Kernels:
- :func:`layer_norm_leaky`: LayerNorm then leaky ReLU over rows, in place.
- :func:`gru_recurrence`: the Keras GRU (reset_after) recurrence over precomputed input
  projections, from a given state.
- :func:`harmonic_bank`: the harmonic oscillator bank in the accurate phase mode, from a
  given phase.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import threading
from collections.abc import Iterator

import numpy as np

__all__ = [
    "BACKENDS",
    "COMPILED_MIN_FRAMES",
    "auto_backend",
    "check_backend",
    "compiled_available",
    "compiled_loaded",
    "gru_recurrence",
    "harmonic_bank",
    "layer_norm_leaky",
    "resolve_backend",
    "single_blas_thread",
]

BACKENDS = ("numpy", "compiled", "auto")
TWO_PI = 2.0 * math.pi
# Frames per numpy harmonic chunk: [chunk, hop] arrays of 64 KB stay in the L2 cache.
_HARMONIC_CHUNK = 256

# Frames from which "auto" compiles even in a short-lived process (60 s at 250 frames/s).
COMPILED_MIN_FRAMES = 15000

_controller_lock = threading.Lock()
_controller = None
_loaded = False


def compiled_available() -> bool:
    """Whether the compiled backend can be used (numba is installed)."""
    return importlib.util.find_spec("numba") is not None


def compiled_loaded() -> bool:
    """Whether the compiled kernels are already loaded in this process."""
    return _loaded


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS` and can be used here, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "compiled" and not compiled_available():
        raise ValueError("the compiled kernels need numba, which is not installed")
    return backend


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"compiled"`` for a backend name (``"auto"``: compiled if possible)."""
    if check_backend(backend) == "auto":
        return "compiled" if compiled_available() else "numpy"
    return backend


def auto_backend(n_frames: int, long_running: bool = False) -> str:
    """The backend ``"auto"`` means for one render of ``n_frames`` frames.

    Compiled when numba is installed and either the process is long-running (a server:
    the start-up is paid once, before the first request), the kernels are loaded already,
    or the clip has at least :data:`COMPILED_MIN_FRAMES` frames (the half second of
    start-up is then a small part of the render); numpy otherwise.
    """
    if not compiled_available():
        return "numpy"
    if long_running or _loaded or n_frames >= COMPILED_MIN_FRAMES:
        return "compiled"
    return "numpy"


def _compiled():
    global _loaded
    from ddsp_pd.inference import compiled

    _loaded = True
    return compiled


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Numpy's BLAS limited to one thread, for loops of small products.

    A matrix-vector product per frame is too small to share: waking a second BLAS thread
    for each one makes the loop slower, not faster. Large products keep every thread.
    """
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield


# ------------------------------------------------------------------ layer norm


def layer_norm_leaky(
    y: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    leak: float,
    backend: str = "numpy",
) -> None:
    """``y [R, C]`` <- leaky_relu(gamma (y - mean) / sqrt(var + eps) + beta), per row."""
    if backend == "compiled":
        _compiled().layer_norm_leaky(y, gamma, beta, np.float32(eps), np.float32(leak))
        return
    for start in range(0, y.shape[0], 512):  # rows of a block stay in cache between passes
        part = y[start : start + 512]
        mean = part.mean(axis=1, keepdims=True)
        part -= mean
        var = np.einsum("ij,ij->i", part, part)[:, None]
        var *= np.float32(1.0 / part.shape[1])
        var += np.float32(eps)
        np.sqrt(var, out=var)
        np.divide(part, var, out=part)
        part *= gamma
        part += beta
        # leaky ReLU with 0 < leak < 1: the larger of y and leak * y.
        np.maximum(part, part * np.float32(leak), out=part)


# ------------------------------------------------------------------ GRU


def gru_recurrence(
    x_proj: np.ndarray,
    recurrent_kernel: np.ndarray,
    recurrent_bias: np.ndarray,
    h0: np.ndarray,
    out: np.ndarray,
    backend: str = "numpy",
    recurrent_kernel_t: np.ndarray | None = None,
) -> np.ndarray:
    """Keras GRU (reset_after) over ``x_proj`` ``[T, >= 3U]`` (``x W + b_input``; columns
    past ``3U`` are ignored), from state ``h0`` ``[U]``; writes ``out`` ``[T, U]`` and
    returns the last state (a copy of ``h0`` when ``T == 0``). The compiled backend reads
    the recurrent kernel transposed (``recurrent_kernel_t`` ``[3U, U]``, contiguous;
    made here when not given).

    Gates in the 3U columns are ordered z, r, h: ``z = s(x_z + h_z)``,
    ``r = s(x_r + h_r)``, ``n = tanh(x_h + r h_h)``, ``h' = z h + (1 - z) n`` where
    ``h_* = h U + b_recurrent``.
    """
    h0 = np.ascontiguousarray(h0, dtype=np.float32)
    if x_proj.shape[0] == 0:
        return h0.copy()
    if backend == "compiled":
        if recurrent_kernel_t is None:
            recurrent_kernel_t = np.ascontiguousarray(recurrent_kernel.T)
        return _compiled().gru_recurrence(x_proj, recurrent_kernel_t, recurrent_bias, h0, out)
    u = recurrent_kernel.shape[0]
    half = np.float32(0.5)
    # sigmoid(a) = (1 + tanh(a / 2)) / 2 (numpy has a fast tanh, and no sigmoid without
    # scipy, whose import costs more than this loop). The halves are folded into copies of
    # the weights so that a step is 13 in-place operations on small arrays.
    rec_half = recurrent_kernel * half
    b_half = recurrent_bias * half
    x_zr = (x_proj[:, : 2 * u] + recurrent_bias[: 2 * u]) * half
    x_h = x_proj[:, 2 * u : 3 * u]
    hp = np.empty(3 * u, np.float32)
    zr = np.empty(2 * u, np.float32)
    g = np.empty(u, np.float32)
    n = np.empty(u, np.float32)
    d = np.empty(u, np.float32)
    h = h0
    with single_blas_thread():
        for t in range(x_proj.shape[0]):
            np.matmul(h, rec_half, out=hp)  # hU / 2
            np.add(x_zr[t], hp[: 2 * u], out=zr)
            np.tanh(zr, out=zr)  # tanh(a_z / 2), tanh(a_r / 2)
            np.add(hp[2 * u :], b_half[2 * u :], out=g)  # (hU_h + b_h) / 2
            # n = tanh(x_h + r (hU_h + b_h)) with r = (1 + t_r) / 2
            np.multiply(zr[u:], g, out=n)
            n += g
            n += x_h[t]
            np.tanh(n, out=n)
            # h' = n + z (h - n) = ((h + n) + t_z (h - n)) / 2
            np.subtract(h, n, out=d)
            d *= zr[:u]
            d += h
            d += n
            np.multiply(d, half, out=out[t])
            h = out[t]
    return h.copy()


# ------------------------------------------------------------------ harmonic bank


def harmonic_bank(
    phase0: float,
    f0: np.ndarray,
    f0_next: np.ndarray,
    amps: np.ndarray,
    amps_next: np.ndarray,
    hop: int,
    sample_rate: float,
    w_this: np.ndarray,
    w_next: np.ndarray,
    backend: str = "numpy",
) -> tuple[np.ndarray, float]:
    """Sum of harmonics for ``T`` frames, and the fundamental's phase after them.

    ``f0`` ``[T]`` (Hz) and ``amps`` ``[T, K]`` (amplitude times distribution) are per
    frame, ``f0_next``/``amps_next`` the frame after each one. Sample ``j hop + m`` has
    frequency ``f0[j] + (f0_next[j] - f0[j]) m / hop`` (float64), phase the inclusive
    running sum of ``2 pi f / sr`` from ``phase0`` (float64, wrapped to [0, 2 pi)), and
    harmonic k amplitude ``amps[j, k] w_this[m] + amps_next[j, k] w_next[m]``, zero where
    ``(k + 1) f >= sr / 2``. Returns ``[T * hop]`` float32 and the end phase.
    """
    f0 = np.ascontiguousarray(f0, np.float64)
    f0_next = np.ascontiguousarray(f0_next, np.float64)
    amps = np.ascontiguousarray(amps, np.float32)
    amps_next = np.ascontiguousarray(amps_next, np.float32)
    w_this = np.ascontiguousarray(w_this, np.float32)
    w_next = np.ascontiguousarray(w_next, np.float32)
    n_frames = f0.shape[0]
    out = np.zeros(n_frames * hop, np.float32)
    if n_frames == 0:
        return out, float(phase0)
    if backend == "compiled":
        phase = _compiled().harmonic_bank(
            float(phase0), f0, f0_next, amps, amps_next, float(sample_rate), w_this, w_next, out
        )
        return out, float(phase)
    phase = float(phase0)
    for start in range(0, n_frames, _HARMONIC_CHUNK):
        stop = min(start + _HARMONIC_CHUNK, n_frames)
        phase = _harmonic_chunk_numpy(
            phase,
            f0[start:stop],
            f0_next[start:stop],
            amps[start:stop],
            amps_next[start:stop],
            sample_rate,
            w_this,
            w_next,
            out[start * hop : stop * hop].reshape(stop - start, hop),
        )
    return out, phase


def _harmonic_chunk_numpy(
    phase0: float,
    f0: np.ndarray,
    f0_next: np.ndarray,
    amps: np.ndarray,
    amps_next: np.ndarray,
    sample_rate: float,
    w_this: np.ndarray,
    w_next: np.ndarray,
    out: np.ndarray,
) -> float:
    hop = out.shape[1]
    nyquist = sample_rate / 2.0
    frac = np.arange(hop, dtype=np.float64) / hop
    freq = f0[:, None] + (f0_next - f0)[:, None] * frac
    phase = np.cumsum(freq.reshape(-1) * (TWO_PI / sample_rate))
    phase += phase0
    end = float(np.mod(phase[-1], TWO_PI))
    theta = np.mod(phase, TWO_PI).astype(np.float32).reshape(out.shape)
    cos1, sin1 = np.cos(theta), np.sin(theta)
    re, im = cos1.copy(), sin1.copy()  # exp(i k theta), k = 1
    t1, t2 = np.empty_like(re), np.empty_like(re)
    amp = np.empty_like(re)
    # Harmonics whose amplitude is zero in every frame of the chunk add nothing; above the
    # highest one nothing needs rotating either.
    live = np.flatnonzero(np.any(amps != 0, axis=0) | np.any(amps_next != 0, axis=0))
    if live.size == 0:
        return end
    live_set = set(live.tolist())
    f_max = float(np.max(np.maximum(f0, f0_next)))
    for k in range(int(live[-1]) + 1):
        if k in live_set:
            np.multiply(amps[:, k, None], w_this, out=amp)
            np.multiply(amps_next[:, k, None], w_next, out=t1)
            amp += t1
            if (k + 1) * f_max >= nyquist:  # some samples of the chunk are at or above Nyquist
                amp[freq * (k + 1) >= nyquist] = 0.0
            amp *= im
            out += amp
        if k < live[-1]:  # exp(i (k + 2) theta) = exp(i (k + 1) theta) exp(i theta)
            np.multiply(re, sin1, out=t1)
            np.multiply(im, sin1, out=t2)
            re *= cos1
            re -= t2
            im *= cos1
            im += t1
    return end
