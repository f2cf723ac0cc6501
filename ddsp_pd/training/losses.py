"""ddsp's multi-scale spectral loss (``losses.SpectralLoss`` as ``solo_instrument.gin`` sets it).

For each FFT size n in (2048, 1024, 512, 256, 128, 64): magnitude STFTs of target and output
(periodic Hann window of n samples, hop n / 4, i.e. overlap 0.75, the end zero-padded to
whole frames); loss += mean |S_t - S_o| + mean |log(S_t + 1e-5) - log(S_o + 1e-5)|.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

__all__ = ["FFT_SIZES", "magnitude", "spectral_loss"]

FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
OVERLAP = 0.75
LOG_EPS = 1e-5


def magnitude(audio: tf.Tensor, size: int, overlap: float = OVERLAP) -> tf.Tensor:
    """|STFT| of ``audio [batch, n]``: frames of ``size``, hop ``size (1 - overlap)``."""
    hop = int(size * (1.0 - overlap))
    return tf.abs(
        tf.signal.stft(
            tf.cast(audio, tf.float32),
            frame_length=size,
            frame_step=hop,
            fft_length=size,
            pad_end=True,
        )
    )


def spectral_loss(
    target: tf.Tensor,
    output: tf.Tensor,
    fft_sizes: Sequence[int] = FFT_SIZES,
    mag_weight: float = 1.0,
    logmag_weight: float = 1.0,
) -> tf.Tensor:
    """The scalar loss between ``target`` and ``output`` audio, both ``[batch, n]``."""
    loss = tf.constant(0.0, tf.float32)
    for size in fft_sizes:
        mag_t = magnitude(target, size)
        mag_o = magnitude(output, size)
        if mag_weight:
            loss += mag_weight * tf.reduce_mean(tf.abs(mag_t - mag_o))
        if logmag_weight:
            log_diff = tf.math.log(mag_t + LOG_EPS) - tf.math.log(mag_o + LOG_EPS)
            loss += logmag_weight * tf.reduce_mean(tf.abs(log_diff))
    return loss
