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
- :func:`few_rows_product`: ``x @ matrix`` for a few rows (a live stream's steps), the
  matrix read once (:class:`RowsKernel`: transposed, float32 or 16-bit).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the decoder imports this module
    from ddsp_pd.inference.decoder import FewRowsPack

__all__ = [
    "BACKENDS",
    "COMPILED_MIN_FRAMES",
    "FEW_ROWS_MAX",
    "GRU_SPLIT_MIN_FRAMES",
    "QuantizedKernel",
    "RowsKernel",
    "auto_backend",
    "check_backend",
    "compiled_available",
    "compiled_loaded",
    "decode_few_rows",
    "few_rows_product",
    "gru_recurrence",
    "harmonic_bank",
    "layer_norm_leaky",
    "resolve_backend",
    "scaled_controls",
    "single_blas_thread",
    "worker_threads",
]

BACKENDS = ("numpy", "compiled", "auto")
TWO_PI = 2.0 * math.pi
# Frames per numpy harmonic chunk: [chunk, hop] arrays of 64 KB stay in the L2 cache.
_HARMONIC_CHUNK = 256

# Frames from which "auto" compiles even in a short-lived process (60 s at 250 frames/s).
COMPILED_MIN_FRAMES = 15000

# Frames from which the compiled GRU shares its units between two threads: starting a
# thread costs ~0.1 ms and a frame's exchange of states ~1 us, so short calls (a live
# stream's steps) stay on one.
GRU_SPLIT_MIN_FRAMES = 256

# Rows up to which a product of the compiled backend reads its matrix once for all of them
# (few_rows_product) rather than through BLAS, which reads it once per row or packs it
# (a live step of the solo-size model: 0.59 -> 0.43 ms for its 16 MB of products at 2 rows,
# 0.87 -> 0.51 ms at 4; in 16 bits 0.17 and 0.26 ms).
FEW_ROWS_MAX = 8

_controller_lock = threading.Lock()
_controller = None
_limit = None
_limit_users = 0
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
    global _controller, _limit, _limit_users
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    # The limit is process-wide: the first of overlapping users sets it, the last one out
    # lifts it (nested or concurrent limits of threadpoolctl's own could restore the
    # wrong count).
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        if _limit_users == 0:
            _limit = _controller.limit(limits=1, user_api="blas")
        _limit_users += 1
    try:
        yield
    finally:
        with _controller_lock:
            _limit_users -= 1
            if _limit_users == 0 and _limit is not None:
                _limit.restore_original_limits()
                _limit = None


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


def _quantize_rows(matrix: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """``matrix`` ``[rows, cols]`` as integers of ``dtype`` with a float32 scale per row (the
    row's largest magnitude over the type's largest value, 1 for a row of zeros), so each
    element is off by at most half a step of its row: ``(q, scale)``, both contiguous."""
    m = np.asarray(matrix, np.float32)
    top = np.float32(np.iinfo(dtype).max)
    peak = np.max(np.abs(m), axis=1)
    scale = np.where(peak > 0, peak / top, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(m / scale[:, None]), -top, top).astype(dtype)
    return np.ascontiguousarray(q), np.ascontiguousarray(scale)


# ------------------------------------------------------------------ few-row products


@dataclass(frozen=True)
class RowsKernel:
    """A matrix ``[K, N]`` arranged for :func:`few_rows_product`: its transpose ``m_t``
    ``[N, K]`` (float32, or int16 with ``matrix.T[j] ~ m_t[j] * scale[j]``: the column's
    largest magnitude over 32767, so each weight is off by at most half a step of its
    column, 1.5e-5 of that magnitude) and the float32 ``scale`` (ones for float32)."""

    m_t: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray, bits: int = 32) -> RowsKernel:
        """The form of ``matrix`` (``[K, N]``) in 32 (float) or 16 (integer) bits."""
        m_t = np.asarray(matrix, np.float32).T
        if bits == 32:
            return cls(np.ascontiguousarray(m_t), np.ones(m_t.shape[0], np.float32))
        if bits != 16:
            raise ValueError(f"bits must be 32 or 16, got {bits}")
        return cls(*_quantize_rows(m_t, np.int16))


def few_rows_product(
    x: np.ndarray, kernel: RowsKernel, out: np.ndarray | None = None
) -> np.ndarray:
    """``x @ matrix`` (``x`` ``[R, K]`` float32, R small) from ``kernel``'s form of the
    matrix, into ``out`` if given; compiled (the caller checks :func:`compiled_available`).
    The float32 form equals BLAS's product to float32 rounding (the sums' order differs)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if out is None:
        out = np.empty((x.shape[0], kernel.m_t.shape[0]), np.float32)
    _compiled().few_rows_product(x, kernel.m_t, kernel.scale, out)
    return out


def decode_few_rows(
    x: np.ndarray,
    pack: FewRowsPack,
    recurrent_kernel_t: np.ndarray,
    recurrent_bias: np.ndarray,
    h: np.ndarray,
    out: np.ndarray,
    eps: float,
    leak: float,
) -> None:
    """A decoder step of a few frames in one compiled call: ``x`` ``[n_inputs, B * T]``
    scaled inputs (batch-major), ``h`` ``[B, U]`` the GRU states (updated in place), ``out``
    ``[B * T, n_outputs]`` the raw outputs, ``eps`` and ``leak`` those of the LayerNorms and
    the leaky ReLUs (``pack``: see :class:`~ddsp_pd.inference.decoder.FewRowsPack`).
    Compiled only."""
    _compiled().decode_few_rows(
        np.ascontiguousarray(x, np.float32),
        pack.n_layers,
        pack.mats,
        pack.mat_table,
        pack.vecs,
        pack.vec_table,
        recurrent_kernel_t,
        recurrent_bias,
        h,
        np.float32(eps),
        np.float32(leak),
        out,
    )


# ------------------------------------------------------------------ GRU


@dataclass(frozen=True)
class QuantizedKernel:
    """A matrix's transpose in 8 bits: ``matrix.T[j] ~ q_t[j] * scale[j]`` (int8 rows,
    a float32 scale per row: the row's largest magnitude over 127, so each weight is off by
    at most half a step of its row)."""

    q_t: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, matrix_t: np.ndarray) -> QuantizedKernel:
        """The 8-bit form of ``matrix_t`` (``[rows, cols]``, the transpose of the kernel)."""
        return cls(*_quantize_rows(matrix_t, np.int8))

    def dequantized_t(self) -> np.ndarray:
        """The float32 matrix (transposed) that the 8-bit form stands for."""
        return self.q_t.astype(np.float32) * self.scale[:, None]


#: Overrides the choice of :func:`quantized_recurrent_pays` (``"int8"`` or ``"float32"``).
FAST_RECURRENT_ENV = "DDSP_PD_FAST_RECURRENT"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def quantized_recurrent_pays() -> bool:
    """Whether ``precision="fast"`` runs the GRU's recurrent kernel in 8 bits here.

    The 8-bit matvec widens each weight to float32 before its multiply-add: on cores with
    512-bit vectors (AVX-512) that is cheap and the kernel's quarter size wins (it fits the
    core's cache); on AVX2-only cores (an AMD Zen 1 EPYC measured 148 ms against 77 ms for
    2500 frames of the solo-size model's half) the conversions cost more than the float32
    kernel's reads, so there the recurrent kernel stays float32 (the rest of ``fast``
    still applies). ``DDSP_PD_FAST_RECURRENT=int8|float32`` decides instead.
    """
    forced = os.environ.get(FAST_RECURRENT_ENV, "").strip().lower()
    if forced in ("int8", "float32"):
        return forced == "int8"
    return "avx512bw" in _cpu_flags()


def worker_threads(n_frames: int) -> int:
    """Threads a decode of ``n_frames`` frames (or rows) shares its work between: 2 on a
    long call where this process may run on two or more cores, else 1.
    ``DDSP_PD_THREADS=1`` forces one."""
    if n_frames < GRU_SPLIT_MIN_FRAMES or os.environ.get("DDSP_PD_THREADS") == "1":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def _gru_compiled(
    x_proj: np.ndarray,
    recurrent_kernel_t: np.ndarray,
    recurrent_bias: np.ndarray,
    h0: np.ndarray,
    out: np.ndarray,
    quantized: QuantizedKernel | None,
    threads: int,
) -> np.ndarray:
    """The compiled GRU on ``threads`` (1 or 2) threads, each its share of the units."""
    compiled = _compiled()
    u = recurrent_kernel_t.shape[1]
    if quantized is None:
        q_t, scale = np.zeros((0, u), np.int8), np.zeros(0, np.float32)
    else:
        q_t, scale = quantized.q_t, quantized.scale
    if threads <= 1 or u < 8:
        if quantized is None:
            return compiled.gru_recurrence(x_proj, recurrent_kernel_t, recurrent_bias, h0, out)
        hbuf = np.zeros((2, u), np.float32)
        counters = np.zeros(2 * compiled.COUNTER_STRIDE, np.int64)
        args = (x_proj, recurrent_kernel_t, q_t, scale, recurrent_bias, h0, out)
        return compiled.gru_part(*args, 0, u, hbuf, counters, 0, 1)
    mid = (u // 2) // 4 * 4  # whole groups of four rows in each part
    hbuf = np.zeros((2, u), np.float32)
    counters = np.zeros(3 * compiled.COUNTER_STRIDE, np.int64)
    abort = 2 * compiled.COUNTER_STRIDE
    args = (x_proj, recurrent_kernel_t, q_t, scale, recurrent_bias, h0, out)
    failure: list[BaseException] = []

    def second() -> None:
        try:
            compiled.gru_part(*args, mid, u, hbuf, counters, 1, 2)
        except BaseException as exc:  # pragma: no cover - the compiled loop cannot raise
            failure.append(exc)
            counters[abort] = 1

    worker = threading.Thread(target=second, name="ddsp-pd-gru", daemon=True)
    try:
        worker.start()
    except RuntimeError:  # pragma: no cover - no thread to be had: one does it all
        return _gru_compiled(x_proj, recurrent_kernel_t, recurrent_bias, h0, out, quantized, 1)
    try:
        h = compiled.gru_part(*args, 0, mid, hbuf, counters, 0, 2)
    except BaseException:  # pragma: no cover - the compiled loop cannot raise
        counters[abort] = 1
        raise
    finally:
        worker.join()
    if failure:  # pragma: no cover
        raise RuntimeError("the GRU's second thread failed") from failure[0]
    return h


def gru_recurrence(
    x_proj: np.ndarray,
    recurrent_kernel: np.ndarray,
    recurrent_bias: np.ndarray,
    h0: np.ndarray,
    out: np.ndarray,
    backend: str = "numpy",
    recurrent_kernel_t: np.ndarray | None = None,
    quantized: QuantizedKernel | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Keras GRU (reset_after) over ``x_proj`` ``[T, >= 3U]`` (``x W + b_input``; columns
    past ``3U`` are ignored), from state ``h0`` ``[U]``; writes ``out`` ``[T, U]`` and
    returns the last state (a copy of ``h0`` when ``T == 0``). The compiled backend reads
    the recurrent kernel transposed (``recurrent_kernel_t`` ``[3U, U]``, contiguous;
    made here when not given) and shares the units between ``threads`` threads (None:
    :func:`worker_threads`), which gives the same result to the bit. ``quantized`` replaces
    the recurrent kernel by its 8-bit form (the numpy backend by the float matrix that
    form stands for, so both backends give the same result to float rounding).

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
        n = worker_threads(x_proj.shape[0]) if threads is None else threads
        return _gru_compiled(x_proj, recurrent_kernel_t, recurrent_bias, h0, out, quantized, n)
    if quantized is not None:
        recurrent_kernel = quantized.dequantized_t().T
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


# ------------------------------------------------------------------ scaled controls


def scaled_controls(
    raw: Mapping[str, np.ndarray],
    f0_hz: np.ndarray,
    nyquist: float,
    normalize: bool,
    bias: float,
    exponent: float,
    max_value: float,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`~ddsp_pd.inference.synth.harmonic_controls` and
    :func:`~ddsp_pd.inference.synth.noise_magnitudes` of a few frames in one compiled call:
    ``(amplitudes, distribution, noise magnitudes)`` shaped as ``raw``'s arrays, or None
    where that does not pay (many rows, or the compiled kernels not loaded: the numpy
    functions then). A live step's dozen small array operations cost ~50 us; this ~3."""
    amps_raw = raw["amps"]
    if not _loaded or amps_raw.ndim != 3 or amps_raw.shape[0] * amps_raw.shape[1] > FEW_ROWS_MAX:
        return None
    shape = amps_raw.shape[:2]
    rows = shape[0] * shape[1]
    f0 = np.asarray(f0_hz, np.float32).reshape(-1)
    if f0.size != rows:
        return None

    def flat(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, np.float32).reshape(rows, -1)

    a, d, n = flat(amps_raw), flat(raw["harmonic_distribution"]), flat(raw["noise_magnitudes"])
    amps, dist, mags = np.empty_like(a), np.empty_like(d), np.empty_like(n)
    f32 = np.float32
    _compiled().scaled_controls(
        a, d, n, f0, f32(nyquist), bool(normalize), f32(bias), f32(math.log(exponent)),
        f32(max_value), f32(threshold), amps, dist, mags,
    )  # fmt: skip
    return (amps.reshape(*shape, -1), dist.reshape(*shape, -1), mags.reshape(*shape, -1))
