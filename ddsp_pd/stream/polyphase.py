"""The streaming resampler's inner loop compiled with numba (cached on disk).

In numpy a call gathers a ``[count, taps]`` window matrix and multiplies it by the phases'
rows: ~50 us of interpreter and temporary arrays for the 128-384 samples of a live step,
twice a step (in and out). Here each output sample is one dot product over the buffer.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["polyphase"]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _polyphase(buffer, table, first, count, down, up, offset, out):  # pragma: no cover
    taps = table.shape[1]
    for i in range(count):
        m = first + i
        n0 = (m * down) // up
        phase = m * down - n0 * up
        base = n0 + offset
        row = table[phase]
        acc = np.float32(0.0)
        for j in range(taps):
            acc += buffer[base + j] * row[j]
        out[i] = acc


def polyphase(
    buffer: np.ndarray, table: np.ndarray, first: int, count: int, down: int, up: int, offset: int
) -> np.ndarray:
    """Output samples ``first .. first + count - 1`` of a polyphase filter: sample ``m`` is
    ``buffer[n0 + offset : n0 + offset + taps] . table[phase]`` with ``n0 = m down // up``
    and ``phase = m down - n0 up`` (float32)."""
    out = np.empty(count, np.float32)
    _polyphase(buffer, table, int(first), int(count), int(down), int(up), int(offset), out)
    return out
