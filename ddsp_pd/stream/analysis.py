"""Causal frame analysis of a live stream: f0, confidence and the level, frame by frame.

:class:`StreamAnalyzer` keeps the model-rate input in a ring buffer and emits frame i (centred
on sample ``i * hop``, the offline convention) as soon as sample ``i * hop + lookahead - 1``
has arrived. The level is what the model reads:

- ``loudness_v3`` (ddsp >= 2.0 solo models): the offline :func:`ddsp_pd.loudness.loudness_v3`
  frame, a 512-sample Hann window centred on the frame, so 256 samples of lookahead; the
  frames equal the offline ones (the clip's start is padded with silence in both);
- ``loudness_v1`` (ddsp 1.x): the 2048-sample v1 frame, but centred on the frame (1024
  samples of lookahead) where ddsp 1.x started it at the frame (that would need 2048);
- ``power`` (DDSP-VST models): :func:`ddsp_pd.power.compute_power`'s centred
  ``frame_size`` frame (512 samples of lookahead for 1024), equal to the offline frames.

f0 comes from a streaming tracker (:class:`~ddsp_pd.stream.pitch.StreamingYin` by default)
on a window ending ``f0_lookahead`` samples after the frame's centre (by default the
tracker's ``preferred_lookahead``, which centres its estimate on the frame, or the level's
lookahead where that is shorter, so that f0 never adds latency to the level's). The
analyser's latency is ``lookahead = max(level lookahead, f0_lookahead)`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ddsp_pd.loudness import (
    V1_N_FFT,
    V1_RANGE_DB,
    V1_REF_DB,
    V3_N_FFT,
    V3_RANGE_DB,
    a_weighting_db,
    periodic_hann,
)
from ddsp_pd.power import DEFAULT_RANGE_DB

__all__ = ["LEVELS", "FrameFeatures", "LevelMeter", "StreamAnalyzer", "StreamTracker"]

LEVELS = ("loudness_v3", "loudness_v1", "power")


class StreamTracker(Protocol):
    """A live f0 tracker: f0 and confidence of a batch of frame windows."""

    name: str
    window_length: int
    preferred_lookahead: int

    def track(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f0_hz, confidence)`` ``[F]`` of windows ``[F, window_length]``."""
        ...

    def reset(self) -> None:
        """Start a new stream."""
        ...


@dataclass(frozen=True)
class FrameFeatures:
    """Features of consecutive frames, float32 ``[F]`` each; ``first`` is the first
    frame's index in the stream."""

    f0_hz: np.ndarray
    f0_confidence: np.ndarray
    level_db: np.ndarray
    first: int = 0

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.f0_hz.shape[0])


class LevelMeter:
    """The level of frames from their windows: one of :data:`LEVELS`."""

    def __init__(self, level: str, sample_rate: int, frame_size: int = 1024) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}: use one of {LEVELS}")
        self.level = level
        if level == "loudness_v3":
            self.window_length = V3_N_FFT
            self._weighting = 10.0 ** (
                a_weighting_db(np.fft.rfftfreq(V3_N_FFT, 1.0 / sample_rate)) / 10.0
            )
            self._window = periodic_hann(V3_N_FFT)
        elif level == "loudness_v1":
            self.window_length = V1_N_FFT
            self._a_weight = (
                a_weighting_db(np.fft.rfftfreq(V1_N_FFT, 1.0 / sample_rate)) - V1_REF_DB
            ).astype(np.float32)
            self._window = periodic_hann(V1_N_FFT)
        else:
            if frame_size % 2:
                raise ValueError(f"power frames need an even frame_size, got {frame_size}")
            self.window_length = int(frame_size)
        self.lookahead = self.window_length // 2

    @property
    def floor_db(self) -> float:
        """The lowest level this meter gives."""
        return -V1_RANGE_DB if self.level == "loudness_v1" else -V3_RANGE_DB

    def measure(self, windows: np.ndarray) -> np.ndarray:
        """Level (dB, float32) of windows ``[F, window_length]`` centred on their frames."""
        x = np.asarray(windows, np.float64)
        if self.level == "power":
            mean_square = np.einsum("ij,ij->i", x, x) / x.shape[1]
            floor = 10.0 ** (-DEFAULT_RANGE_DB / 10.0)
            db = 10.0 * np.log10(np.maximum(mean_square, floor))
            return np.maximum(db, -DEFAULT_RANGE_DB).astype(np.float32)
        spectrum = np.fft.rfft(x * self._window, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        if self.level == "loudness_v3":
            mean = np.mean(power * self._weighting, axis=-1)
            db = 10.0 * np.log10(np.maximum(mean, 10.0 ** (-V3_RANGE_DB / 10.0)))
            return np.maximum(db, -V3_RANGE_DB).astype(np.float32)
        db = 10.0 * np.log10(np.maximum(power, 1e-40).astype(np.float32)) + self._a_weight
        return np.mean(np.maximum(db, -V1_RANGE_DB), axis=-1, dtype=np.float64).astype(np.float32)


class StreamAnalyzer:
    """Frame features of a model-rate stream pushed in pieces of any size.

    ``level`` is one of :data:`LEVELS`; ``frame_size`` is the power frame (``power`` only).
    Frames come out in order, each once, with :attr:`lookahead` samples of latency.
    """

    def __init__(
        self,
        sample_rate: int,
        hop: int,
        level: str,
        tracker: StreamTracker,
        frame_size: int = 1024,
        f0_lookahead: int | None = None,
    ) -> None:
        self.sample_rate = int(sample_rate)
        self.hop = int(hop)
        self.meter = LevelMeter(level, sample_rate, frame_size)
        self.tracker = tracker
        n = tracker.window_length
        preferred = int(getattr(tracker, "preferred_lookahead", n // 2))
        default = min(self.meter.lookahead, preferred)
        self.f0_lookahead = int(default if f0_lookahead is None else f0_lookahead)
        if not 0 <= self.f0_lookahead <= n:
            raise ValueError(f"f0_lookahead must be in [0, {n}], got {self.f0_lookahead}")
        self.lookahead = max(self.meter.lookahead, self.f0_lookahead)
        # Samples before a frame's centre that its windows reach back to.
        self._back = max(n - self.f0_lookahead, self.meter.window_length // 2)
        self._f0_span = np.arange(n)
        self._level_span = np.arange(self.meter.window_length)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (silence before its first sample, as offline padding)."""
        self.tracker.reset()
        self._next = 0
        self._received = 0
        self._start = -self._back  # stream index of _buffer[0]
        self._buffer = np.zeros(self._back, np.float32)

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far."""
        return self._next

    def frames_ready(self, received: int) -> int:
        """How many frames exist once ``received`` samples have arrived."""
        if received < self.lookahead:
            return 0
        return (received - self.lookahead) // self.hop + 1

    def push(self, samples: np.ndarray) -> FrameFeatures:
        """Add model-rate mono samples; returns the features of every frame now complete."""
        x = np.asarray(samples, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, x])
        self._received += x.size
        ready = self.frames_ready(self._received)
        first = self._next
        count = ready - first
        if count <= 0:
            empty = np.zeros(0, np.float32)
            return FrameFeatures(empty, empty, empty, first)
        centres = (first + np.arange(count)) * self.hop - self._start
        n = self.tracker.window_length
        # Gathered rows (a sliding-window view costs more for the few frames of a block).
        starts = centres + self.f0_lookahead - n
        f0, confidence = self.tracker.track(self._buffer[starts[:, None] + self._f0_span])
        starts = centres - self.meter.window_length // 2
        level = self.meter.measure(self._buffer[starts[:, None] + self._level_span])
        self._next = ready
        keep_from = self._next * self.hop - self._back - self._start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._start += keep_from
        return FrameFeatures(
            np.asarray(f0, np.float32), np.asarray(confidence, np.float32), level, first
        )
