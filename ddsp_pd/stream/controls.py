"""The timbre-transfer controls of a live stream, frame by frame, with ramps and live
auto-adjust.

The offline chain (:func:`ddsp_pd.controls.apply_controls`) sees the whole clip: its
auto-adjust fits the clip's note-on register and level distribution to the model's. Live,
only the past is known, so auto-adjust is defined on the note-on frames heard so far:

- **note detection** is ddsp's ``detect_notes`` made causal: the confidence smoothing
  averages the *last* 40 frames, and the clip's mean level is the mean of the frames heard
  so far (frozen once the estimate is held);
- **the estimate** (octave shift; level map: the quantile map of the note-on loudness onto
  the dataset's for solo models, the note-on power range onto the model's for power models,
  exactly the offline functions on the collected frames; the major key for autotune) is
  first made after :data:`MIN_NOTE_SECONDS` of note-on frames and then refreshed every
  :data:`UPDATE_SECONDS`;
- ``mode="hold"`` (the default) freezes it once ``hold_seconds`` (4 s) of note-on frames
  have been heard: the register and level are set by the first notes and stay put;
  ``mode="running"`` keeps refreshing it from the last ``window_seconds`` (10 s) of
  note-on frames;
- until the first estimate, frames pass unchanged (no shift, no level map, no quiet).

Every change, whether a setting sent over OSC or a new estimate, takes effect at the next
frame and is ramped over ``ramp_seconds`` (50 ms) so that it does not click: octaves move
linearly in octaves (f0 glides), the loudness shift in dB, and a new level map is
cross-faded from the old one. The confidence gate and the note threshold act at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ddsp_pd.controls import (
    EXAMPLE_SECONDS,
    ControlSettings,
    auto_octave_shift,
    best_major_key,
    hz_to_midi,
    map_power_range,
    midi_to_hz,
    note_range,
    range_octave_shift,
)
from ddsp_pd.errors import ControlError
from ddsp_pd.statistics import DatasetStatistics, ModelRanges, QuantileTransform

__all__ = [
    "ADJUST_MODES",
    "MIN_NOTE_SECONDS",
    "UPDATE_SECONDS",
    "AdjustEstimate",
    "LiveAdjust",
    "LiveControls",
    "Ramp",
    "causal_note_values",
]

ADJUST_MODES = ("hold", "running")
#: Seconds of note-on frames before the first auto-adjust estimate.
MIN_NOTE_SECONDS = 0.25
#: Seconds between refreshes of the estimate.
UPDATE_SECONDS = 0.25
_NOTE_SMOOTHING = 40  # frames, as ddsp's detect_notes
_NOTE_REFERENCE = 0.7**2
_F0_MAX_HZ = float(midi_to_hz(np.float64(110.0)))
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_C_MAJOR = np.ravel([_MAJOR + 12 * i for i in range(10)])


class Ramp:
    """A value that moves linearly to each new target over ``frames`` frames."""

    def __init__(self, value: float, frames: int) -> None:
        self.value = float(value)
        self.target = float(value)
        self.frames = max(1, int(frames))
        self._step = 0.0

    def set(self, target: float) -> None:
        """Move to ``target`` from the next frame on."""
        self.target = float(target)
        self._step = (self.target - self.value) / self.frames

    @property
    def settled(self) -> bool:
        """Whether the value has reached its target (every next value is the same)."""
        return self.value == self.target

    def next(self, n: int) -> np.ndarray:
        """The values of the next ``n`` frames (float64)."""
        if self.settled or n == 0:
            return np.full(n, self.value)
        values = self.value + self._step * np.arange(1, n + 1)
        done = (values - self.target) * np.sign(self._step) >= 0
        values[done] = self.target
        self.value = float(values[-1])
        return values


def _times_octaves(f0: np.ndarray, ramp: Ramp, n: int) -> np.ndarray:
    """``f0`` (float32 ``[n]``) times 2 to the ramp's next ``n`` values, as float32. A
    settled ramp (nearly always) costs one scalar, or nothing at 0 octaves: a live step's
    four ramps spent ~20 us on arrays of equal values."""
    if ramp.settled:
        if ramp.value == 0.0:
            return f0
        return f0 * np.exp2(np.full(1, ramp.value)).astype(np.float32)
    return f0 * np.exp2(ramp.next(n)).astype(np.float32)


def causal_note_values(
    level_db: np.ndarray,
    confidence: np.ndarray,
    level_sum: float,
    level_count: int,
    min_db: float,
    history: np.ndarray,
    frozen_mean: float | None = None,
) -> np.ndarray:
    """ddsp's note-on value made causal, for new frames ``[F]``: the mean of
    ``confidence ** 2`` over each frame and the 39 before it (``history``: the squares of
    the frames before these), times ``(level - min_db) / ((mean - min_db) 0.49)`` where
    ``mean`` is the mean level of every frame up to this one (``level_sum`` and
    ``level_count`` are those before these frames), or ``frozen_mean`` when given."""
    squares = np.concatenate([history, np.asarray(confidence, np.float64) ** 2])
    csum = np.concatenate([[0.0], np.cumsum(squares)])
    n = len(confidence)
    ends = np.arange(len(history) + 1, len(history) + n + 1)
    smooth = (csum[ends] - csum[np.maximum(ends - _NOTE_SMOOTHING, 0)]) / _NOTE_SMOOTHING
    level = np.asarray(level_db, np.float64)
    if frozen_mean is None:
        mean = (level_sum + np.cumsum(level)) / (level_count + np.arange(1, n + 1))
    else:
        mean = np.full(n, frozen_mean)
    denominator = np.maximum((mean - min_db) * _NOTE_REFERENCE, 1e-6)
    return (smooth * (level - min_db) / denominator).astype(np.float32)


@dataclass(frozen=True)
class AdjustEstimate:
    """One auto-adjust estimate: the octave shift, the level map, the autotune key."""

    octave: float = 0.0
    # Solo: the clip's note-on quantile transform (mapped through the dataset's).
    clip_transform: QuantileTransform | None = None
    # Power: the clip's note-on range and the knee of the map.
    clip_range: tuple[float, float] | None = None
    knee_db: float | None = None
    key: int = 0
    notes_seconds: float = 0.0

    @property
    def maps_level(self) -> bool:
        """Whether this estimate maps the level at all."""
        return self.clip_transform is not None or self.clip_range is not None


class LiveAdjust:
    """Live auto-adjust towards a solo model's statistics or a power model's ranges."""

    def __init__(
        self,
        frame_rate: float,
        min_db: float,
        statistics: DatasetStatistics | None = None,
        ranges: ModelRanges | None = None,
        mode: str = "hold",
        hold_seconds: float = 4.0,
        window_seconds: float = 10.0,
    ) -> None:
        if mode not in ADJUST_MODES:
            raise ControlError(f"auto-adjust mode must be one of {ADJUST_MODES}, got {mode!r}")
        self.frame_rate = float(frame_rate)
        self.min_db = float(min_db)
        self.statistics = statistics
        self.ranges = ranges
        self.mode = mode
        self.hold_frames = max(1, round(hold_seconds * frame_rate))
        self.window_frames = max(1, round(window_seconds * frame_rate))
        self.reset()

    @property
    def available(self) -> bool:
        """Whether the model has what auto-adjust needs."""
        return self.statistics is not None or self.ranges is not None

    def reset(self) -> None:
        """Forget every note heard."""
        self.estimate = AdjustEstimate()
        self.estimates = 0
        self.held = False
        self._f0: list[np.ndarray] = []
        self._level: list[np.ndarray] = []
        self._on_frames = 0
        self._since_update = 0
        self._level_sum = 0.0
        self._level_count = 0
        self._frozen_mean: float | None = None
        self._history = np.zeros(0)

    @property
    def mean_level_db(self) -> float:
        """The mean level of the frames heard so far (frozen once the estimate is held)."""
        if self._frozen_mean is not None:
            return self._frozen_mean
        if self._level_count == 0:
            return self.min_db
        return self._level_sum / self._level_count

    def note_values(self, level_db: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Note-on values of the next frames (nothing is remembered: see :meth:`observe`)."""
        return causal_note_values(
            level_db,
            confidence,
            self._level_sum,
            self._level_count,
            self.min_db,
            self._history,
            self._frozen_mean,
        )

    def frames_until_update(self, mask: np.ndarray) -> int:
        """How many of the next frames (with note-on ``mask``) to observe before the
        estimate is refreshed after the last of them (all of them when none is due)."""
        n = len(mask)
        if self.held or not self.available or n == 0:
            return n
        on_total = self._on_frames + np.cumsum(np.asarray(mask, np.int64))
        since = self._since_update + np.arange(1, n + 1)
        due = on_total >= MIN_NOTE_SECONDS * self.frame_rate
        if self.estimates:
            due &= since >= UPDATE_SECONDS * self.frame_rate
        hits = np.flatnonzero(due)
        return int(hits[0]) + 1 if hits.size else n

    def observe(
        self,
        f0_hz: np.ndarray,
        level_db: np.ndarray,
        confidence: np.ndarray,
        mask: np.ndarray,
    ) -> bool:
        """Remember new frames (their note-on frames, the level mean, the smoothing
        history); refresh the estimate if one is due after the last of them (take them as
        :meth:`frames_until_update` says). True when the estimate changed."""
        if self._frozen_mean is None:
            self._level_sum += float(np.sum(level_db, dtype=np.float64))
            self._level_count += len(level_db)
        squares = np.concatenate([self._history, np.asarray(confidence, np.float64) ** 2])
        self._history = squares[-(_NOTE_SMOOTHING - 1) :]
        if self.held or not self.available:
            return False
        on = np.asarray(mask, bool)
        if on.any():
            self._f0.append(np.asarray(f0_hz, np.float32)[on])
            self._level.append(np.asarray(level_db, np.float32)[on])
            self._on_frames += int(on.sum())
        self._since_update += len(on)
        min_frames = MIN_NOTE_SECONDS * self.frame_rate
        due = self._since_update >= UPDATE_SECONDS * self.frame_rate or self.estimates == 0
        if self._on_frames < min_frames or not due:
            return False
        f0 = np.concatenate(self._f0)
        level = np.concatenate(self._level)
        if self.mode == "running" and f0.size > self.window_frames:
            f0, level = f0[-self.window_frames :], level[-self.window_frames :]
            self._f0, self._level = [f0], [level]
        self.estimate = self._fit(f0, level)
        self.estimates += 1
        self._since_update = 0
        if self.mode == "hold" and self._on_frames >= self.hold_frames:
            self.held = True
            self._frozen_mean = self.mean_level_db
            self._f0, self._level = [], []
        return True

    def _fit(self, f0: np.ndarray, level: np.ndarray) -> AdjustEstimate:
        mask = np.ones(f0.size, bool)
        seconds = f0.size / self.frame_rate
        # The key (for autotune) from at most 250 frames spread over the notes: its cost
        # grows with the frames, and the key hardly changes.
        step = max(1, f0.size // 250)
        key = best_major_key(hz_to_midi(f0[::step]), mask[::step])
        if self.statistics is not None:
            octave = auto_octave_shift(f0, mask, self.statistics.mean_pitch)
            transform = QuantileTransform.fit(level)
            return AdjustEstimate(octave, clip_transform=transform, key=key, notes_seconds=seconds)
        assert self.ranges is not None
        voiced = f0 > 0
        octave = 0.0
        if voiced.any():
            pitch = float(np.mean(hz_to_midi(f0[voiced]).astype(np.float64)))
            r = self.ranges
            octave = range_octave_shift(pitch, r.pitch_min_note, r.pitch_max_note)
        n_chunks = max(1, round(level.size / (EXAMPLE_SECONDS * self.frame_rate)))
        clip_range = note_range(level, mask, n_chunks)
        assert clip_range is not None
        knee = min(clip_range[0], float(level.min()))
        return AdjustEstimate(
            octave, clip_range=clip_range, knee_db=knee, key=key, notes_seconds=seconds
        )

    def map_level(
        self, estimate: AdjustEstimate, level_db: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """The level after ``estimate``'s map (the offline rules, frame by frame)."""
        out = np.asarray(level_db, np.float32).copy()
        if estimate.clip_transform is not None and self.statistics is not None:
            if mask.any():
                u = estimate.clip_transform.transform(out[mask])
                out[mask] = self.statistics.quantile_transform.inverse_transform(u)
        elif estimate.clip_range is not None and self.ranges is not None:
            model_range = (self.ranges.power_min_db, self.ranges.power_max_db)
            out, _ = map_power_range(
                out, estimate.clip_range, model_range, self.min_db, estimate.knee_db
            )
        return out


class LiveControls:
    """Per-frame controls of a live stream (see the module notes).

    ``settings`` are the controls of ``render`` (:class:`ddsp_pd.controls.ControlSettings`);
    :meth:`set` changes one by name at the next frame. ``adjust`` does the live auto-adjust
    (None: a model without statistics; auto-adjust then does nothing).
    """

    def __init__(
        self,
        frame_rate: float,
        min_db: float,
        settings: ControlSettings | None = None,
        adjust: LiveAdjust | None = None,
        ramp_seconds: float = 0.05,
    ) -> None:
        self.frame_rate = float(frame_rate)
        self.min_db = float(min_db)
        self.settings = (settings or ControlSettings()).validate()
        self.adjust = adjust or LiveAdjust(frame_rate, min_db)
        self.ramp_frames = max(1, round(ramp_seconds * frame_rate))
        self._octave = Ramp(self.settings.octave, self.ramp_frames)
        self._loudness = Ramp(self.settings.loudness_db, self.ramp_frames)
        self._auto_octave = Ramp(0.0, self.ramp_frames)
        self._previous = AdjustEstimate()  # the map being faded out
        self._applied = AdjustEstimate()  # the map of the last frame
        self._fade = Ramp(1.0, self.ramp_frames)
        self.last_mask = np.zeros(0, bool)

    def set(self, name: str, value: float | bool) -> None:
        """Change one control (``octave``, ``loudness_db``, ``confidence``, ``adjust``,
        ``quiet``, ``autotune``, ``note_threshold``); ControlError if out of range."""
        if name == "loudness":
            name = "loudness_db"
        if name == "adjust":
            value = bool(value)
        elif name in ("octave", "loudness_db", "confidence", "quiet", "autotune", "note_threshold"):
            value = float(value)
        else:
            raise ControlError(f"unknown live control {name!r}")
        self.settings = replace(self.settings, **{name: value}).validate()
        if name == "octave":
            self._octave.set(float(value))
        elif name == "loudness_db":
            self._loudness.set(float(value))
        elif name == "adjust":
            self._auto_octave.set(self.adjust.estimate.octave if value else 0.0)

    def _adjusted(
        self, f0: np.ndarray, level: np.ndarray, confidence: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Auto-adjust of new frames, cut where the estimate is refreshed, so that the
        result does not depend on how many frames come at a time."""
        s = self.settings
        adjust = self.adjust
        n = f0.size
        f0_out = np.empty(n, np.float32)
        level_out = np.empty(n, np.float32)
        masks = []
        pos = 0
        while pos < n:
            rest = slice(pos, n)
            values = adjust.note_values(level[rest], confidence[rest])
            mask = values >= s.note_threshold
            active = s.adjust and adjust.available
            k = adjust.frames_until_update(mask) if active else n - pos
            seg = slice(pos, pos + k)
            f0_out[seg], level_out[seg] = self._segment(
                f0[seg], level[seg], mask[:k], values[:k], active
            )
            masks.append(mask[:k])
            if adjust.observe(f0[seg], level[seg], confidence[seg], mask[:k]) and active:
                self._previous = self._current_map()
                self._fade.value = 0.0
                self._fade.set(1.0)
                self._auto_octave.set(adjust.estimate.octave)
            pos += k
        self.last_mask = np.concatenate(masks) if masks else np.zeros(0, bool)
        return f0_out, level_out

    def _current_map(self) -> AdjustEstimate:
        # What was applied until now (the fade towards the previous estimate counts as
        # done: a refresh during a fade starts the next fade from the newer map).
        return self._applied

    def _segment(
        self,
        f0: np.ndarray,
        level: np.ndarray,
        mask: np.ndarray,
        values: np.ndarray,
        active: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        adjust = self.adjust
        n = f0.size
        f0 = _times_octaves(f0, self._auto_octave, n)
        if not active:
            return f0, level
        estimate = adjust.estimate
        self._applied = estimate
        new = adjust.map_level(estimate, level, mask)
        fade = None if self._fade.settled and self._fade.value >= 1.0 else self._fade.next(n)
        if fade is None or np.all(fade >= 1.0):
            mapped = new
        else:
            old = adjust.map_level(self._previous, level, mask)
            mapped = (old + (new - old) * fade).astype(np.float32)
        if estimate.maps_level:
            off = ~mask
            mapped[off] -= np.float32(s.quiet) * (np.float32(1.0) - values[off])
        if s.autotune > 0 and estimate.maps_level:
            midi = hz_to_midi(f0).astype(np.float64)
            scale = _C_MAJOR + estimate.key
            diff = midi[:, None] - scale[None, :]
            nearest = np.take_along_axis(diff, np.argmin(np.abs(diff), axis=1)[:, None], axis=1)
            f0 = np.where(f0 > 0, midi_to_hz(midi - s.autotune * nearest[:, 0]), 0.0)
            f0 = f0.astype(np.float32)
        return f0, mapped

    def apply(
        self, f0_hz: np.ndarray, confidence: np.ndarray, level_db: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The f0 and level the model gets for new frames (``[F]`` each)."""
        f0 = np.asarray(f0_hz, np.float32)
        conf = np.asarray(confidence, np.float32)
        level = np.asarray(level_db, np.float32)
        n = f0.size
        if n == 0:
            return f0, level
        f0, level = self._adjusted(f0, level, conf)
        loudness = self._loudness
        if not (loudness.settled and loudness.value == 0.0):
            level = (level + loudness.next(n)).astype(np.float32)
        f0 = _times_octaves(f0, self._octave, n)
        f0 = np.clip(f0, 0.0, _F0_MAX_HZ).astype(np.float32)
        f0 = np.where(conf < self.settings.confidence, np.float32(0.0), f0).astype(np.float32)
        return f0, level
