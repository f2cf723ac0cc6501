"""numba versions of the kernels in :mod:`ddsp_pd.inference.kernels` (same arguments).

Compiled once per machine and cached on disk (``cache=True``); ``nogil`` so another thread
can work meanwhile. Importing this module imports numba (~0.2 s) and the first call in a
process costs ~0.35 s more even from the cache: see :mod:`ddsp_pd.inference.kernels` for
when that pays. Sums are accumulated in float64 where float32 would lose digits (the
LayerNorm moments, the oscillator phase and the harmonic rotation).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "decode_few_rows",
    "few_rows_product",
    "gru_part",
    "gru_recurrence",
    "harmonic_bank",
    "layer_norm_leaky",
    "scaled_controls",
    "warm_up",
]

_TWO_PI = 2.0 * math.pi
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# Sums may be reordered (vectorised): float32 rounding changes, NaN and infinity handling
# does not (inputs are checked finite before they get here).
_fast = numba.njit(
    cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz", "arcp"}
)


@_fast
def layer_norm_leaky(y, gamma, beta, eps, leak):  # pragma: no cover - compiled
    rows, cols = y.shape
    inv = np.float32(1.0 / cols)
    for r in range(rows):
        row = y[r]
        total = np.float32(0.0)
        for c in range(cols):
            total += row[c]
        mean = total * inv
        sq = np.float32(0.0)
        for c in range(cols):
            d = row[c] - mean
            sq += d * d
        scale = np.float32(1.0) / np.sqrt(sq * inv + eps)
        for c in range(cols):
            v = (row[c] - mean) * scale * gamma[c] + beta[c]
            row[c] = max(v, v * leak)


_LOG2E = np.float32(1.4426950408889634)
# ln 2 split in two so that n ln 2 is exact for the n that occur (Cody and Waite).
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)


@_fast
def _exp_inplace(x, bits):  # pragma: no cover - compiled
    """``x <- exp(x)`` (float32, relative error < 4e-7), arguments clamped to [-87, 88].

    libm's scalar ``expf`` is most of a GRU step's time; this form vectorises: ``exp(x) =
    2^n exp(r)`` with ``|r| <= ln 2 / 2``, ``exp(r)`` by its Taylor polynomial of degree 7
    and ``2^n`` built as the bits of a float32 in ``bits`` (an int32 scratch array).
    """
    size = x.shape[0]
    for i in range(size):
        v = min(max(x[i], np.float32(-87.0)), np.float32(88.0))
        n = np.floor(v * _LOG2E + np.float32(0.5))
        r = v - n * _LN2_HI - n * _LN2_LO
        p = np.float32(1.0 / 5040.0)
        p = p * r + np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        x[i] = p
        bits[i] = (np.int32(n) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for i in range(size):
        x[i] *= scale[i]


@_fast
def _matvec(matrix_t, h, out):  # pragma: no cover - compiled
    """``out = h @ matrix`` with ``matrix_t = matrix.T`` contiguous, four outputs at a time
    so that each load of ``h`` serves four rows. ``matrix_t`` may be int8 (the 8-bit
    kernel, scaled by the caller afterwards): each element is read as float32."""
    rows, cols = matrix_t.shape
    j = 0
    while j + 4 <= rows:
        r0 = matrix_t[j]
        r1 = matrix_t[j + 1]
        r2 = matrix_t[j + 2]
        r3 = matrix_t[j + 3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for i in range(cols):
            hi = h[i]
            a0 += np.float32(r0[i]) * hi
            a1 += np.float32(r1[i]) * hi
            a2 += np.float32(r2[i]) * hi
            a3 += np.float32(r3[i]) * hi
        out[j] = a0
        out[j + 1] = a1
        out[j + 2] = a2
        out[j + 3] = a3
        j += 4
    while j < rows:
        r0 = matrix_t[j]
        a0 = np.float32(0.0)
        for i in range(cols):
            a0 += np.float32(r0[i]) * h[i]
        out[j] = a0
        j += 1


@_fast
def few_rows_product(x, matrix_t, scale, out):  # pragma: no cover - compiled
    """``out[r, j] = scale[j] * (x[r] . matrix_t[j])``: ``x @ matrix * scale`` for a few
    rows, with the matrix read once for up to four rows (a row of ``matrix_t`` is loaded
    once and serves every row of ``x`` in its group). ``matrix_t`` is float32 or int16
    (the 16-bit form, each element read as float32); ``x`` and ``out`` rows contiguous."""
    rows = x.shape[0]
    cols, depth = matrix_t.shape
    # One unrolled loop per group size (4, 3, 2, 1 rows), so that the accumulators stay in
    # registers. Padding groups of 2 or 3 to 4 with zero rows (one loop) measured slower: a
    # 2-row 16-bit step 0.32 against 0.22 ms (warm) and live RTF 0.216 against 0.181.
    r = 0
    while r < rows:
        left = rows - r
        if left >= 4:
            x0 = x[r]
            x1 = x[r + 1]
            x2 = x[r + 2]
            x3 = x[r + 3]
            for j in range(cols):
                w = matrix_t[j]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for i in range(depth):
                    wi = np.float32(w[i])
                    a0 += x0[i] * wi
                    a1 += x1[i] * wi
                    a2 += x2[i] * wi
                    a3 += x3[i] * wi
                s = scale[j]
                out[r, j] = a0 * s
                out[r + 1, j] = a1 * s
                out[r + 2, j] = a2 * s
                out[r + 3, j] = a3 * s
            r += 4
        elif left == 3:
            x0 = x[r]
            x1 = x[r + 1]
            x2 = x[r + 2]
            for j in range(cols):
                w = matrix_t[j]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                for i in range(depth):
                    wi = np.float32(w[i])
                    a0 += x0[i] * wi
                    a1 += x1[i] * wi
                    a2 += x2[i] * wi
                s = scale[j]
                out[r, j] = a0 * s
                out[r + 1, j] = a1 * s
                out[r + 2, j] = a2 * s
            r += 3
        elif left == 2:
            x0 = x[r]
            x1 = x[r + 1]
            for j in range(cols):
                w = matrix_t[j]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                for i in range(depth):
                    wi = np.float32(w[i])
                    a0 += x0[i] * wi
                    a1 += x1[i] * wi
                s = scale[j]
                out[r, j] = a0 * s
                out[r + 1, j] = a1 * s
            r += 2
        else:
            x0 = x[r]
            for j in range(cols):
                w = matrix_t[j]
                a0 = np.float32(0.0)
                for i in range(depth):
                    a0 += x0[i] * np.float32(w[i])
                out[r, j] = a0 * scale[j]
            r += 1


@_fast
def _gru_gates(xt, hp, bias, h, out_t, pre, bits, u):  # pragma: no cover - compiled
    one = np.float32(1.0)
    for j in range(2 * u):  # z and r: sigmoid(a) = 1 / (1 + exp(-a))
        pre[j] = -(xt[j] + hp[j] + bias[j])
    _exp_inplace(pre[: 2 * u], bits[: 2 * u])
    for j in range(2 * u):
        pre[j] = one / (one + pre[j])
    for j in range(u):  # n = tanh(a) = sign(a) (1 - exp(-2|a|)) / (1 + exp(-2|a|))
        a = xt[2 * u + j] + pre[u + j] * (hp[2 * u + j] + bias[2 * u + j])
        hp[j] = a
        pre[2 * u + j] = np.float32(-2.0) * abs(a)
    _exp_inplace(pre[2 * u :], bits[2 * u :])
    for j in range(u):
        e = pre[2 * u + j]
        n = (one - e) / (one + e)
        if hp[j] < 0:
            n = -n
        v = n + pre[j] * (h[j] - n)
        h[j] = v
        out_t[j] = v


@_jit
def gru_recurrence(x_proj, recurrent_kernel_t, recurrent_bias, h0, out):  # pragma: no cover
    n_frames = x_proj.shape[0]
    u = recurrent_kernel_t.shape[1]
    h = h0.copy()
    hp = np.empty(3 * u, np.float32)
    pre = np.empty(3 * u, np.float32)
    bits = np.empty(3 * u, np.int32)
    for t in range(n_frames):
        _matvec(recurrent_kernel_t, h, hp)
        _gru_gates(x_proj[t], hp, recurrent_bias, h, out[t], pre, bits, u)
    return h


@_jit
def _matrix(flat, table, j):  # pragma: no cover - compiled
    """Matrix ``j`` of a packed decoder: ``table[j] = (offset, rows, cols)`` into ``flat``."""
    o = table[j, 0]
    return flat[o : o + table[j, 1] * table[j, 2]].reshape((table[j, 1], table[j, 2]))


@_jit
def _vector(flat, table, j):  # pragma: no cover - compiled
    o = table[j, 0]
    return flat[o : o + table[j, 1]]


@_jit
def _dense_rows(x, mats, mat_table, m, vecs, vec_table, v, ones):  # pragma: no cover
    """``x @ matrix m + vector v`` (float32, the few-rows product), a new array."""
    matrix_t = _matrix(mats, mat_table, m)
    y = np.empty((x.shape[0], matrix_t.shape[0]), np.float32)
    few_rows_product(x, matrix_t, ones, y)
    bias = _vector(vecs, vec_table, v)
    for r in range(y.shape[0]):
        for c in range(y.shape[1]):
            y[r, c] += bias[c]
    return y


@_jit
def decode_few_rows(
    x, n_layers, mats, mat_table, vecs, vec_table, rec_t, rec_bias, h, eps, leak, out
):  # pragma: no cover - compiled
    """One call for a whole decoder step of a few frames (``x`` ``[n_inputs, B * T]``
    scaled inputs, batch-major; ``h`` ``[B, U]`` the GRU states, updated; ``out``
    ``[B * T, n_outputs]``), from the packed
    weights of :class:`ddsp_pd.inference.decoder.FewRowsPack` (its notes say which matrix
    and vector is which). The same loops as the separate kernels, without the ~40 calls
    from Python a step of them costs (~0.3 ms)."""
    n_in, rows = x.shape
    size = 0
    for j in range(mat_table.shape[0]):
        size = max(size, mat_table[j, 1])
    ones = np.ones(size, np.float32)
    first_fused = n_in * n_layers
    width = mat_table[first_fused, 1]
    fused = np.zeros((rows, width), np.float32)
    for i in range(n_in):
        # The first layer reads a scalar: a broadcast, as in the numpy stacks.
        k0 = _matrix(mats, mat_table, i * n_layers)
        b0 = _vector(vecs, vec_table, 3 * i * n_layers)
        y = np.empty((rows, k0.shape[0]), np.float32)
        for r in range(rows):
            for c in range(k0.shape[0]):
                y[r, c] = x[i, r] * k0[c, 0] + b0[c]
        v = 3 * i * n_layers
        layer_norm_leaky(y, _vector(vecs, vec_table, v + 1), _vector(vecs, vec_table, v + 2),
                         eps, leak)  # fmt: skip
        for k in range(1, n_layers):
            m = i * n_layers + k
            y = _dense_rows(y, mats, mat_table, m, vecs, vec_table, 3 * m, ones)
            layer_norm_leaky(y, _vector(vecs, vec_table, 3 * m + 1),
                             _vector(vecs, vec_table, 3 * m + 2), eps, leak)  # fmt: skip
        part = np.empty((rows, width), np.float32)
        few_rows_product(y, _matrix(mats, mat_table, first_fused + i), ones, part)
        for r in range(rows):
            for c in range(width):
                fused[r, c] += part[r, c]
    v = 3 * n_in * n_layers  # then: fused bias, out-first gamma and beta, the rest's
    fused_bias = _vector(vecs, vec_table, v)
    for r in range(rows):
        for c in range(width):
            fused[r, c] += fused_bias[c]
    u = rec_t.shape[1]
    rnn = np.empty((rows, u), np.float32)
    hp = np.empty(3 * u, np.float32)
    pre = np.empty(3 * u, np.float32)
    bits = np.empty(3 * u, np.int32)
    frames = rows // h.shape[0]
    for b in range(h.shape[0]):
        state = h[b]
        for t in range(b * frames, (b + 1) * frames):
            _matvec(rec_t, state, hp)
            _gru_gates(fused[t], hp, rec_bias, state, rnn[t], pre, bits, u)
    m = first_fused + n_in
    first_t = _matrix(mats, mat_table, m)
    y = np.empty((rows, first_t.shape[0]), np.float32)
    few_rows_product(rnn, first_t, ones, y)
    for r in range(rows):
        for c in range(y.shape[1]):
            y[r, c] += fused[r, 3 * u + c]
    layer_norm_leaky(y, _vector(vecs, vec_table, v + 1), _vector(vecs, vec_table, v + 2),
                     eps, leak)  # fmt: skip
    v += 3
    for k in range(n_layers - 1):
        y = _dense_rows(y, mats, mat_table, m + 1 + k, vecs, vec_table, v, ones)
        layer_norm_leaky(y, _vector(vecs, vec_table, v + 1), _vector(vecs, vec_table, v + 2),
                         eps, leak)  # fmt: skip
        v += 3
    y = _dense_rows(y, mats, mat_table, m + n_layers, vecs, vec_table, v, ones)
    for r in range(rows):
        for c in range(y.shape[1]):
            out[r, c] = y[r, c]


# Two threads of one GRU exchange their halves of the state once per frame through an
# int64 counter per thread: an atomic release store after writing, an acquire load before
# reading (numba has no atomics of its own; these are LLVM's).
@intrinsic
def _load_acquire(typingctx, arr, idx):  # pragma: no cover - compiled
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):  # pragma: no cover - compiled
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, types.int64), codegen


_sched_yield = types.ExternalFunction("sched_yield", types.int32())
# Spins of a waiting thread before it yields its core (a wait is normally well under a
# microsecond; a yield lets the other thread run when both share one core).
_SPINS_BEFORE_YIELD = 2000
#: Counter slots apart per thread (128 bytes: the threads' counters share no cache line).
COUNTER_STRIDE = 16


@_jit
def gru_part(
    x_proj,
    recurrent_kernel_t,
    q_t,
    q_scale,
    recurrent_bias,
    h0,
    out,
    u0,
    u1,
    hbuf,
    counters,
    part,
    n_parts,
):  # pragma: no cover - compiled
    """Units ``u0:u1`` of the GRU of :func:`gru_recurrence`, one of ``n_parts`` threads.

    Each thread computes the gates of its units from the whole previous state, writes its
    slice of ``out`` and of ``hbuf[(t + 1) % 2]``, then waits until every other part has
    finished frame ``t``. ``q_t``/``q_scale`` (non-empty) replace the recurrent kernel by
    its 8-bit form. ``counters[n_parts * COUNTER_STRIDE]`` non-zero means another part
    failed: every part then returns early and the result is invalid (the caller raises).
    Returns the state after the last frame (all ``U`` units).
    """
    n_frames = x_proj.shape[0]
    u = recurrent_kernel_t.shape[1]
    k = u1 - u0
    quantized = q_t.shape[0] > 0
    abort = n_parts * COUNTER_STRIDE
    h = h0.copy()
    hk = h[u0:u1].copy()
    hp = np.empty(3 * k, np.float32)
    pre = np.empty(3 * k, np.float32)
    bits = np.empty(3 * k, np.int32)
    xt = np.empty(3 * k, np.float32)
    bias = np.empty(3 * k, np.float32)
    for g in range(3):
        bias[g * k : (g + 1) * k] = recurrent_bias[g * u + u0 : g * u + u1]
    for t in range(n_frames):
        for g in range(3):
            lo = g * u + u0
            if quantized:
                _matvec(q_t[lo : lo + k], h, hp[g * k : (g + 1) * k])
                for j in range(k):
                    hp[g * k + j] *= q_scale[lo + j]
            else:
                _matvec(recurrent_kernel_t[lo : lo + k], h, hp[g * k : (g + 1) * k])
            xt[g * k : (g + 1) * k] = x_proj[t, lo : lo + k]
        _gru_gates(xt, hp, bias, hk, out[t, u0:u1], pre, bits, k)
        if n_parts == 1:
            h[:] = hk
            continue
        nb = (t + 1) % 2
        hbuf[nb, u0:u1] = hk
        _store_release(counters, part * COUNTER_STRIDE, t + 1)
        for p in range(n_parts):
            if p == part:
                continue
            spins = 0
            while _load_acquire(counters, p * COUNTER_STRIDE) < t + 1:
                if _load_acquire(counters, abort) != 0:
                    return h
                spins += 1
                if spins >= _SPINS_BEFORE_YIELD:
                    _sched_yield()
                    spins = 0
        h[:] = hbuf[nb]
    return h


@_jit
def harmonic_bank(
    phase0, f0, f0_next, amps, amps_next, sample_rate, w_this, w_next, out
):  # pragma: no cover - compiled
    n_frames, n_harm = amps.shape
    hop = w_this.shape[0]
    nyquist = sample_rate / 2.0
    step = _TWO_PI / sample_rate
    freq = np.empty(hop, np.float64)
    c1 = np.empty(hop, np.float64)
    s1 = np.empty(hop, np.float64)
    re = np.empty(hop, np.float64)
    im = np.empty(hop, np.float64)
    acc = np.empty(hop, np.float64)
    phase = phase0
    for j in range(n_frames):
        a = f0[j]
        b = f0_next[j]
        for m in range(hop):
            fr = a + (b - a) * (m / hop)
            freq[m] = fr
            phase += fr * step
            if phase >= _TWO_PI:
                phase -= _TWO_PI * math.floor(phase / _TWO_PI)
            c1[m] = math.cos(phase)
            s1[m] = math.sin(phase)
            re[m] = c1[m]
            im[m] = s1[m]
            acc[m] = 0.0
        top = -1
        for k in range(n_harm):
            if amps[j, k] != 0 or amps_next[j, k] != 0:
                top = k
        f_max = max(a, b)
        for k in range(top + 1):
            ak = amps[j, k]
            bk = amps_next[j, k]
            if ak != 0 or bk != 0:
                kk = k + 1.0
                if kk * f_max >= nyquist:
                    for m in range(hop):
                        if freq[m] * kk < nyquist:
                            acc[m] += (ak * w_this[m] + bk * w_next[m]) * im[m]
                else:
                    for m in range(hop):
                        acc[m] += (ak * w_this[m] + bk * w_next[m]) * im[m]
            for m in range(hop):
                r = re[m]
                re[m] = r * c1[m] - im[m] * s1[m]
                im[m] = r * s1[m] + im[m] * c1[m]
        base = j * hop
        for m in range(hop):
            out[base + m] = acc[m]
    return phase


@_jit
def _exp_sigmoid_row(x, bias, log_exponent, max_value, threshold, out):  # pragma: no cover
    for i in range(x.shape[0]):
        v = x[i] + bias
        e = np.exp(-abs(v))
        s = (np.float32(1.0) if v >= 0 else e) / (np.float32(1.0) + e)
        out[i] = max_value * s**log_exponent + threshold


@_jit
def scaled_controls(  # pragma: no cover - compiled
    amps_raw, dist_raw, noise_raw, f0, nyquist, normalize, bias, log_exponent, max_value,
    threshold, amps, dist, mags,
):
    rows, k = dist_raw.shape
    zero = np.float32(0.0)
    for r in range(rows):
        _exp_sigmoid_row(amps_raw[r], zero, log_exponent, max_value, threshold, amps[r])
        _exp_sigmoid_row(noise_raw[r], bias, log_exponent, max_value, threshold, mags[r])
        row = dist[r]
        _exp_sigmoid_row(dist_raw[r], zero, log_exponent, max_value, threshold, row)
        if normalize:
            for j in range(k):
                if f0[r] * np.float32(j + 1) >= nyquist:
                    row[j] = zero
        total = zero
        for j in range(k):
            total += row[j]
        if total == zero:
            total = np.float32(1e-7)
        for j in range(k):
            row[j] = row[j] / total


def warm_up() -> None:
    """Load (or compile) every kernel for the argument types inference uses."""
    f32 = np.float32
    y = np.ones((2, 4), f32)
    layer_norm_leaky(y, np.ones(4, f32), np.zeros(4, f32), f32(1e-3), f32(0.2))
    u = 4
    gru_recurrence(
        np.zeros((2, 3 * u + 2), f32),
        np.zeros((3 * u, u), f32),
        np.zeros(3 * u, f32),
        np.zeros(u, f32),
        np.zeros((2, u), f32),
    )
    x = np.zeros((2, 3 * u + 2), f32)
    rk_t = np.zeros((3 * u, u), f32)
    for q_t, scale in (
        (np.zeros((0, u), np.int8), np.zeros(0, f32)),
        (np.zeros((3 * u, u), np.int8), np.ones(3 * u, f32)),
    ):
        gru_part(
            x,
            rk_t,
            q_t,
            scale,
            np.zeros(3 * u, f32),
            np.zeros(u, f32),
            np.zeros((2, u), f32),
            0,
            u,
            np.zeros((2, u), f32),
            np.zeros(2 * COUNTER_STRIDE, np.int64),
            0,
            1,
        )
    # A decoder of one input, one layer per stack, ch 2, one GRU unit, 3 outputs.
    ch, width, n_out = 2, 3 * 1 + 2, 3
    shapes = [(ch, 1), (width, ch), (ch, 1), (n_out, ch)]
    sizes = [ch, ch, ch, width, ch, ch, n_out]
    mat_table = np.array([(sum(a * b for a, b in shapes[:j]), *shapes[j]) for j in range(4)])
    vec_table = np.array([(sum(sizes[:j]), sizes[j]) for j in range(len(sizes))])
    decode_few_rows(
        np.ones((1, 2), f32),
        1,
        np.full(sum(a * b for a, b in shapes), 0.1, f32),
        mat_table.astype(np.int64),
        np.ones(sum(sizes), f32),
        vec_table.astype(np.int64),
        np.zeros((3, 1), f32),
        np.zeros(3, f32),
        np.zeros((1, 1), f32),
        f32(1e-3),
        f32(0.2),
        np.zeros((2, n_out), f32),
    )
    for matrix_t in (np.ones((3, 4), f32), np.ones((3, 4), np.int16)):
        few_rows_product(np.ones((5, 4), f32), matrix_t, np.ones(3, f32), np.zeros((5, 3), f32))
    hop = 4
    harmonic_bank(
        0.0,
        np.full(2, 100.0),
        np.full(2, 100.0),
        np.ones((2, 3), f32),
        np.ones((2, 3), f32),
        16000.0,
        np.ones(hop, f32),
        np.zeros(hop, f32),
        np.zeros(2 * hop, f32),
    )
    ones = np.ones((2, 3), f32)
    scaled_controls(
        np.ones((2, 1), f32), ones, ones, np.ones(2, f32), f32(8000.0), True, f32(-5.0), f32(2.3),
        f32(2.0), f32(1e-7), np.zeros((2, 1), f32), np.zeros((2, 3), f32), np.zeros((2, 3), f32),
    )
