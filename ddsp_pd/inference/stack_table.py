"""Tabulated input stacks for ``precision="fast"``: a scalar in, a row of products out.

Each input of the decoder (``f0_scaled``, ``ld_scaled``, ``pw_scaled``) is one number per
frame, and it reaches the GRU and the output stack only as ``stack(x) @ rows`` (its rows of
the fused kernel): a smooth function from one number to ``3U + ch`` numbers (LayerNorm is
smooth in ``x``; the leaky ReLUs add kinks). Tabulated on a grid of step :data:`STEP` and
interpolated linearly, it costs two row reads per frame instead of two Fc layers and a
``ch x (3U + ch)`` product (for the solo-size model, 1.5 M multiply-adds a frame, half the
decoder's arithmetic when both inputs are new).

The grid covers ``[LOW, HIGH]``, far wider than any feature's scaled range; it is filled in
chunks of :data:`CHUNK` points on first use (a chunk is always computed alone and whole,
so an entry's value never depends on which render asked for it first: the same input gives
the same bits in a fresh process and after a thousand renders). Memory is reserved for the
whole grid but only chunks that have been written occupy any (the pages of an untouched
``numpy.zeros`` are never mapped). A value outside the grid, or not finite, is computed
exactly.

Error: at ``STEP = 1/1024`` (0.08 dB of loudness, 0.12 semitones of f0), the interpolated
products of the solo-size model differ from the exact ones by at most 5e-4 of their RMS
(loudness) and 3e-6 (f0) on the fixtures' features; tests/test_precision.py holds the whole
fast render within :data:`ddsp_pd.inference.compare.FAST_BOUND_DB`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

__all__ = ["CHUNK", "HIGH", "LOW", "STEP", "ScalarTable"]

#: Grid step in scaled units (an input's whole usual range is about 1).
STEP = 1.0 / 1024
#: The grid's ends: scaled f0 and loudness of real features lie well inside.
LOW, HIGH = -1.0, 2.0
#: Points computed together (and only together) on first use.
CHUNK = 64

_POINTS = round((HIGH - LOW) / STEP) + 1


class ScalarTable:
    """``fn(x)`` for scalar ``x`` on a lazily filled grid, interpolated linearly.

    ``fn`` maps float32 points ``[P]`` to float32 rows ``[P, width]``. Safe to share between
    threads (filling takes a lock; reads of filled chunks need none).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], width: int) -> None:
        self._fn = fn
        self.width = int(width)
        n_chunks = -(-_POINTS // CHUNK)
        # Zeros, not empty: untouched pages still occupy no memory, and a row gathered for a
        # value outside the grid (then overwritten) holds no garbage to warn about.
        self._values = np.zeros((n_chunks * CHUNK, self.width), np.float32)
        self._filled = np.zeros(n_chunks, bool)
        self._lock = threading.Lock()

    @property
    def chunks_filled(self) -> int:
        """How many chunks have been computed."""
        return int(self._filled.sum())

    @property
    def nbytes(self) -> int:
        """Bytes occupied by the computed chunks."""
        return self.chunks_filled * CHUNK * self.width * 4

    @staticmethod
    def _positions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, index, fraction): which values the grid holds, the grid point at or
        below each, and how far on towards the next (float32)."""
        u = (np.asarray(x, np.float64) - LOW) / STEP
        inside = np.isfinite(u) & (u >= 0.0) & (u < _POINTS - 1)
        index = np.floor(np.where(inside, u, 0.0)).astype(np.int64)
        fraction = (np.where(inside, u, 0.0) - index).astype(np.float32)
        return inside, index, fraction

    def fill(self, x: np.ndarray) -> None:
        """Compute every chunk that interpolating at ``x`` reads (the rest are left)."""
        inside, index, _ = self._positions(np.ravel(x))
        self._fill(inside, index)

    def _fill(self, inside: np.ndarray, index: np.ndarray) -> None:
        if not inside.any():
            return
        index = index[inside]
        needed = np.union1d(index // CHUNK, (index + 1) // CHUNK)
        missing = needed[~self._filled[needed]]
        if missing.size == 0:
            return
        with self._lock:
            for chunk in missing:
                if self._filled[chunk]:
                    continue
                start = int(chunk) * CHUNK
                points = (LOW + STEP * np.arange(start, start + CHUNK)).astype(np.float32)
                self._values[start : start + CHUNK] = self._fn(points)
                self._filled[chunk] = True

    def fill_range(self, low: float, high: float) -> None:
        """Compute every chunk between ``low`` and ``high`` (warm-up of a live stream)."""
        self.fill(np.arange(low, high + STEP, STEP))

    def interpolate(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[R, width]`` of ``fn`` at ``x`` ``[R]`` (filling what is missing first)."""
        x = np.ravel(np.asarray(x, np.float32))
        inside, index, fraction = self._positions(x)
        self._fill(inside, index)
        if out is None:
            out = np.empty((x.size, self.width), np.float32)
        values = self._values
        lower = values[index]
        # lower + fraction * (upper - lower), in place in the gathered rows.
        upper = values[index + 1]
        np.subtract(upper, lower, out=upper)
        upper *= fraction[:, None]
        np.add(lower, upper, out=out)
        if not inside.all():
            outside = ~inside
            out[outside] = self._fn(x[outside])
        return out
