"""Frame power in dB, as ddsp's ``compute_power`` gives it to DDSP-VST models, and the scaling
of ``OnlineF0PowerPreprocessor``.

Power is the level feature of models trained with ddsp's ``models/vst/vst.gin`` (and the
DDSP-VST plugin's ``.tflite`` models) where solo models use A-weighted loudness:

- the clip is padded with ``frame_size // 2`` zeros at each end (``padding='center'``);
- frames of ``frame_size`` samples every ``hop = sample_rate / frame_rate`` samples, no window,
  so frame i is centred on sample ``hop * i`` and there are ``len(audio) // hop + 1`` frames;
- ``pw_db = max(10 log10(max(mean(x^2), 10^(-range_db / 10))), -range_db) - ref_db``.

The preprocessor then feeds the decoder ``pw_scaled = pw_db / range_db + 1`` and
``f0_scaled = hz_to_midi(f0) / 127`` (0 Hz -> 0).

Sums of squares are accumulated in float64 (ddsp uses float32; the two agree within about two
float32 steps of ``pw_db``, 1e-7 relative, on the reference clips). :class:`StreamingPower`
gives the same frames from audio pushed in pieces.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_RANGE_DB",
    "StreamingPower",
    "compute_power",
    "power_hop",
    "scale_f0_hz",
    "scale_power_db",
]

DEFAULT_RANGE_DB = 80.0  # ddsp's DB_RANGE: the floor of pw_db and the scale of pw_scaled

# Frames per block: bounds the float64 copy of a long clip (2048 x 1024 x 8 bytes = 16 MB).
_BLOCK_FRAMES = 2048


def power_hop(sample_rate: int, frame_rate: float) -> int:
    """Samples between power frames; ``sample_rate / frame_rate`` must be a whole number.

    Raises:
        ValueError: non-positive rates, or a hop that is not a whole number of samples.
    """
    if not sample_rate > 0 or not frame_rate > 0:
        raise ValueError(f"sample_rate ({sample_rate}) and frame_rate ({frame_rate}) must be > 0")
    hop = sample_rate / frame_rate
    if not math.isclose(hop, round(hop), rel_tol=0.0, abs_tol=1e-9):
        raise ValueError(
            f"frame_rate {frame_rate:g} does not divide sample_rate {sample_rate}: "
            f"the hop would be {hop:g} samples"
        )
    return round(hop)


def _check_frame_size(frame_size: int, hop: int) -> int:
    if isinstance(frame_size, bool) or int(frame_size) != frame_size or frame_size <= 0:
        raise ValueError(f"frame_size must be a positive whole number, got {frame_size!r}")
    frame_size = int(frame_size)
    if frame_size % 2:
        raise ValueError(f"centred power frames need an even frame_size, got {frame_size}")
    if hop > frame_size:
        raise ValueError(f"hop ({hop}) is larger than frame_size ({frame_size})")
    return frame_size


def _mean_square_to_db(
    mean_square: NDArray[np.float64], ref_db: float, range_db: float
) -> NDArray[np.float32]:
    floor = 10.0 ** (-range_db / 10.0)
    db = 10.0 * np.log10(np.maximum(mean_square, floor)) - ref_db
    return np.maximum(db, -range_db).astype(np.float32)


def _frame_mean_squares(padded: NDArray[np.floating], frame_size: int, hop: int) -> np.ndarray:
    """mean(x^2) of every ``frame_size`` frame every ``hop`` samples of ``padded`` (float64)."""
    n_frames = (len(padded) - frame_size) // hop + 1 if len(padded) >= frame_size else 0
    out = np.empty(n_frames, dtype=np.float64)
    if n_frames == 0:
        return out
    frames = sliding_window_view(padded, frame_size)[::hop][:n_frames]
    for start in range(0, n_frames, _BLOCK_FRAMES):
        block = frames[start : start + _BLOCK_FRAMES].astype(np.float64)
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, block) / frame_size
    return out


def compute_power(
    audio: ArrayLike,
    sample_rate: int,
    frame_rate: float,
    frame_size: int,
    padding: str = "center",
    ref_db: float = 0.0,
    range_db: float = DEFAULT_RANGE_DB,
) -> NDArray[np.float32]:
    """Power in dB of each frame of mono ``audio`` (ddsp's ``spectral_ops.compute_power``).

    Args:
        audio: mono samples ``[n]``.
        sample_rate, frame_rate: the model's rates; the hop is ``sample_rate / frame_rate``.
        frame_size: samples per power frame (even; 1024 in ``vst.gin``).
        padding: only ``'center'`` (what ``OnlineF0PowerPreprocessor`` uses) is supported.
        ref_db: subtracted from the dB value, as in ddsp.
        range_db: the floor is ``-range_db`` dB.

    Returns:
        float32 ``[len(audio) // hop + 1]``; frame i is centred on sample ``hop * i``.

    Raises:
        ValueError: audio that is not 1-D or not finite, or unusable rates and sizes.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"compute_power expects mono audio of shape [n], got shape {x.shape}")
    if padding != "center":
        raise ValueError(f"only padding='center' is supported, got {padding!r}")
    if not range_db > 0:
        raise ValueError(f"range_db must be > 0, got {range_db}")
    hop = power_hop(sample_rate, frame_rate)
    frame_size = _check_frame_size(frame_size, hop)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    half = frame_size // 2
    padded = np.pad(x, (half, half))
    return _mean_square_to_db(_frame_mean_squares(padded, frame_size, hop), ref_db, range_db)


def scale_power_db(power_db: ArrayLike, range_db: float = DEFAULT_RANGE_DB) -> NDArray[np.float32]:
    """``pw_scaled = pw_db / range_db + 1``: the decoder input of a power model (float32)."""
    return (np.asarray(power_db, dtype=np.float64) / range_db + 1.0).astype(np.float32)


def scale_f0_hz(f0_hz: ArrayLike) -> NDArray[np.float32]:
    """``f0_scaled = hz_to_midi(f0) / 127`` with 0 Hz (and below) mapped to 0 (float32)."""
    f = np.asarray(f0_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        midi = 12.0 * (np.log2(f) - math.log2(440.0)) + 69.0
    return (np.where(f > 0.0, midi, 0.0) / 127.0).astype(np.float32)


class StreamingPower:
    """:func:`compute_power` of audio that arrives in pieces, one frame per hop.

    Frame i (centred on sample ``hop * i``) is complete once sample
    ``hop * i + frame_size / 2 - 1`` has arrived, so :meth:`push` returns frames with a
    latency of ``frame_size / 2`` samples; :meth:`flush` pads the end with zeros and returns
    the rest. Concatenated, the results equal ``compute_power`` of the whole clip.
    Only the last ``frame_size`` samples are kept.
    """

    def __init__(
        self,
        sample_rate: int,
        frame_rate: float,
        frame_size: int,
        ref_db: float = 0.0,
        range_db: float = DEFAULT_RANGE_DB,
    ) -> None:
        self.hop = power_hop(sample_rate, frame_rate)
        self.frame_size = _check_frame_size(frame_size, self.hop)
        if not range_db > 0:
            raise ValueError(f"range_db must be > 0, got {range_db}")
        self.ref_db = float(ref_db)
        self.range_db = float(range_db)
        self.reset()

    def reset(self) -> None:
        """Start a new clip (the leading half frame of zeros again)."""
        # _buffer[0] is padded-signal sample _start; frame k starts at padded sample hop * k.
        self._buffer = np.zeros(self.frame_size // 2, dtype=np.float64)
        self._start = 0
        self._next_frame = 0
        self._received = 0
        self._flushed = False

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far."""
        return self._next_frame

    def push(self, samples: ArrayLike) -> NDArray[np.float32]:
        """Add mono samples; returns the power (dB, float32) of every frame now complete."""
        if self._flushed:
            raise RuntimeError("StreamingPower was flushed; call reset() for a new clip")
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(x)):
            raise ValueError("audio contains NaN or infinite samples")
        self._received += len(x)
        self._buffer = np.concatenate([self._buffer, x])
        return self._emit()

    def flush(self) -> NDArray[np.float32]:
        """End of the clip: pad ``frame_size / 2`` zeros and return the remaining frames."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, np.zeros(self.frame_size // 2)])
        out = self._emit(total=self._received // self.hop + 1)
        self._flushed = True
        return out

    def _emit(self, total: int | None = None) -> NDArray[np.float32]:
        end = self._start + len(self._buffer)  # padded samples available
        available = (end - self.frame_size) // self.hop + 1 if end >= self.frame_size else 0
        if total is not None:
            available = min(available, total)
        first = self._next_frame
        if available <= first:
            return np.zeros(0, dtype=np.float32)
        offset = first * self.hop - self._start
        length = (available - first - 1) * self.hop + self.frame_size
        region = self._buffer[offset : offset + length]
        db = _mean_square_to_db(
            _frame_mean_squares(region, self.frame_size, self.hop), self.ref_db, self.range_db
        )
        self._next_frame = available
        # Keep only what the next frame can still need.
        keep_from = self._next_frame * self.hop - self._start
        self._buffer = self._buffer[keep_from:]
        self._start += keep_from
        return db
