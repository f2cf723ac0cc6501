"""Uniformly partitioned FFT convolution (overlap-save) for a long impulse response.

A reverb impulse response of 1-3 s convolved block by block with one big FFT per block
would cost a transform of the whole response for every few milliseconds of audio. Here the
response is cut into partitions of ``block`` samples, each transformed once; every block of
input is transformed once and kept in a frequency-domain delay line, and a block of output
is the sum over partitions of delayed input spectra times partition spectra, then one
inverse transform. Output block k is complete as soon as input block k is, so the
convolution adds no latency beyond the block; several blocks at a time are done in one
batch. The result equals the direct convolution to float rounding however the input is cut.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PartitionedConvolver"]


def _conj_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum(conj(a) * b)`` over the last axis (numpy >= 2 has it as one fast call)."""
    return (np.conj(a) * b).sum(axis=-1)


_vecdot = getattr(np, "vecdot", _conj_dot)


class PartitionedConvolver:
    """Causal convolution of a stream with ``ir`` in blocks of ``block`` samples.

    :meth:`process` takes any number of samples and returns as many output samples as
    whole blocks have been completed (input not yet making a whole block waits).
    """

    def __init__(self, ir: np.ndarray, block: int) -> None:
        ir = np.asarray(ir, np.float32).reshape(-1)
        if block < 1 or ir.size < 1:
            raise ValueError("need a positive block size and a non-empty impulse response")
        self.block = int(block)
        self.partitions = -(-ir.size // self.block)
        padded = np.zeros(self.partitions * self.block, np.float32)
        padded[: ir.size] = ir
        parts = padded.reshape(self.partitions, self.block)
        # Overlap-save with a 2B transform: each partition zero-padded to 2B.
        self._spectra = np.fft.rfft(parts, 2 * self.block, axis=1).astype(np.complex64)
        self.reset()

    def reset(self) -> None:
        """Start from silence."""
        p, bins = self.partitions, self.block + 1
        # The last P input spectra live twice in a buffer of 2P columns (written at k and
        # k + P), so that, oldest first, they are the columns k + 1 .. k + P.
        self._line = np.zeros((bins, 2 * p), np.complex64)
        self._k = p - 1
        # vecdot conjugates its first argument: pass the partitions conjugated, newest
        # partition last (it meets the oldest spectrum).
        self._reversed = np.ascontiguousarray(np.conj(self._spectra[::-1]).T)
        self._previous = np.zeros(self.block, np.float32)  # the block before the next one
        self._pending = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Convolve the next samples; returns the output of every completed block."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        b, p = self.block, self.partitions
        n_blocks = x.size // b
        self._pending = x[n_blocks * b :].copy()
        if n_blocks == 0:
            return np.zeros(0, np.float32)
        blocks = x[: n_blocks * b].reshape(n_blocks, b)
        previous = np.concatenate([self._previous[None], blocks[:-1]], axis=0)
        frames = np.concatenate([previous, blocks], axis=1)  # [Q, 2B]: overlap-save inputs
        spectra = np.fft.rfft(frames, axis=1).astype(np.complex64)
        acc = np.empty_like(spectra)
        line, reversed_ = self._line, self._reversed
        for q in range(n_blocks):
            k = (self._k + 1) % p
            line[:, k] = spectra[q]
            line[:, k + p] = spectra[q]
            self._k = k
            # Output block = sum over partitions j of the spectrum j blocks old times H_j.
            acc[q] = _vecdot(reversed_, line[:, k + 1 : k + 1 + p])
        out = np.fft.irfft(acc, 2 * b, axis=1)[:, b:].astype(np.float32)
        self._previous = blocks[-1].copy()
        return out.reshape(-1)
