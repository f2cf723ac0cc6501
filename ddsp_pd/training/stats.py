"""The contents of ``dataset_statistics.pkl``, computed from training examples as ddsp does.

ddsp's ``compute_dataset_statistics`` (>= 1.6) works on the examples of a dataset, each
``[n_frames]`` long: the last 20 frames of every example are dropped, note-on frames are
found with ``detect_notes`` (mean loudness over the whole set, box-smoothed confidence per
example), examples without any note count all their frames, and for pitch (MIDI, 0 where
f0 is 0), power and loudness it records mean, max, min, the mean over examples of each
example's max and min, and std, over all frames and over note-on frames (``_note``). The
quantile transform is fitted on note-on loudness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ddsp_pd.controls import hz_to_midi
from ddsp_pd.statistics import QuantileTransform

__all__ = ["DatasetStats", "compute_dataset_statistics", "compute_power"]

TRIM_END = 20
_SMOOTHING = 40
_CONFIDENCE_REFERENCE = 0.7
#: ddsp's power feature: RMS of 1024-sample frames, centred, in dB with an -80 dB floor.
POWER_FRAME_SIZE = 1024
_RANGE_DB = 80.0


@dataclass(frozen=True)
class DatasetStats:
    """Scalar statistics (insertion order = ddsp's) and the note-on loudness transform."""

    values: dict[str, float]
    quantile_transform: QuantileTransform


def compute_power(
    audio: NDArray[np.floating], hop: int, n_frames: int, frame_size: int = POWER_FRAME_SIZE
) -> NDArray[np.float32]:
    """Frame power in dB as ddsp 3.x computes it (``spectral_ops.compute_power``).

    Audio ``[batch, n]`` is zero-padded by half a frame each side and cut into frames of
    ``frame_size`` (1024) samples every ``hop`` samples, frame i centred on sample ``hop * i``;
    power = mean
    square, in dB with a floor of -80; the first ``n_frames`` frames are returned.

    ddsp's ``compute_dataset_statistics`` defaults to 50 power frames per second, which its
    note mask (at the feature rate) cannot index; the ddsp 3.7 reference file has note-on
    power fields, so it was made with power at the feature rate, and so are ours.
    """
    x = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    half = frame_size // 2
    padded = np.pad(x, ((0, 0), (half, half)))
    n_frames = min(n_frames, (padded.shape[1] - frame_size) // hop + 1)
    # Per example and strided, so a big set never holds all frames at once.
    power = np.stack(
        [
            np.mean(sliding_window_view(row, frame_size)[::hop][:n_frames] ** 2, axis=-1)
            for row in padded
        ]
    )
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    return np.maximum(db, -_RANGE_DB).astype(np.float32)


def _box_smooth_rows(x: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Zero-padded box average along the last axis, aligned as TensorFlow's 'SAME' conv."""
    before = (size - 1) // 2
    after = size - 1 - before
    padded = np.pad(x, ((0, 0), (before, after)))
    csum = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(padded, axis=1)], axis=1)
    return ((csum[:, size:] - csum[:, :-size]) / size).astype(np.float32)


def _note_mask(loudness: NDArray[np.float32], confidence: NDArray[np.float32], min_db: float):
    mean_db = np.mean(loudness)
    smooth = _box_smooth_rows(confidence**2, _SMOOTHING)
    on = smooth * (loudness - min_db) / ((mean_db - min_db) * _CONFIDENCE_REFERENCE**2) >= 1.0
    # Examples without any detected note count all their frames.
    return on | ~np.any(on, axis=1, keepdims=True)


def _stats(x: NDArray[np.float32], prefix: str, mask: NDArray[np.bool_] | None) -> dict[str, float]:
    if mask is None:
        mean_max = np.mean(np.max(x, axis=-1))
        mean_min = np.mean(np.min(x, axis=-1))
        flat = x.reshape(-1)
    else:
        rows = [(row, m) for row, m in zip(x, mask, strict=True) if m.any()]
        mean_max = np.mean([row[m].max() for row, m in rows])
        mean_min = np.mean([row[m].min() for row, m in rows])
        flat = x[mask]
    return {
        f"mean_{prefix}": float(np.mean(flat)),
        f"max_{prefix}": float(np.max(flat)),
        f"min_{prefix}": float(np.min(flat)),
        f"mean_max_{prefix}": float(mean_max),
        f"mean_min_{prefix}": float(mean_min),
        f"std_{prefix}": float(np.std(flat)),
    }


def compute_dataset_statistics(
    audio: NDArray[np.floating],
    f0_hz: NDArray[np.floating],
    f0_confidence: NDArray[np.floating],
    loudness_db: NDArray[np.floating],
    hop: int = 64,
    min_db: float = -80.0,
    power_frame_size: int = POWER_FRAME_SIZE,
) -> DatasetStats:
    """Statistics of a set of examples: ``audio [batch, n]``, frame features ``[batch, frames]``.

    Power is computed from the audio at the features' hop with ``power_frame_size`` frames
    (for centred DDSP-VST examples, ``n / hop + 1`` frames: the model's own power input).
    """
    f0 = np.atleast_2d(np.asarray(f0_hz, dtype=np.float32))
    if f0.shape[1] <= TRIM_END:
        raise ValueError(f"examples of {f0.shape[1]} frames are too short for statistics")
    pitch = hz_to_midi(f0).astype(np.float32)[:, :-TRIM_END]
    loudness = np.atleast_2d(np.asarray(loudness_db, dtype=np.float32))[:, :-TRIM_END]
    confidence = np.atleast_2d(np.asarray(f0_confidence, dtype=np.float32))[:, :-TRIM_END]
    power = compute_power(audio, hop, f0.shape[1], power_frame_size)[:, :-TRIM_END]
    mask = _note_mask(loudness, confidence, min_db)
    values: dict[str, float] = {}
    values.update(_stats(pitch, "pitch", None))
    values.update(_stats(power, "power", None))
    values.update(_stats(loudness, "loudness", None))
    values.update(_stats(pitch, "pitch_note", mask))
    values.update(_stats(power, "power_note", mask))
    values.update(_stats(loudness, "loudness_note", mask))
    transform = QuantileTransform.fit(loudness[mask])
    return DatasetStats(values=values, quantile_transform=transform)
