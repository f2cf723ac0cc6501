"""The timbre-transfer controls: auto-adjust, quiet, autotune, shifts and the confidence gate.

Pure numpy functions on frame features (``f0_hz``, ``f0_confidence``, ``loudness_db``: float32
``[n_frames]``) with the semantics of Magenta's timbre-transfer notebook and the ddsp library
functions it calls (``detect_notes``, ``fit_quantile_transform``, ``get_tuning_factor``,
``auto_tune``); see ``shared/reference/controls.md``. Arithmetic follows the library's float32
steps where that decides a comparison (note detection thresholds, the octave rounding), so
the golden values of the ddsp 3.7 reference fixture are reproduced.

:func:`apply_controls` runs them in the notebook's order:

1. if auto-adjust is on and dataset statistics are given: :func:`detect_notes`; if any frame
   is note-on: :func:`auto_octave_shift`, :func:`fit_quantile_transform` (loudness of note-on
   frames mapped onto the dataset's distribution), :func:`apply_quiet`, and if the autotune
   amount is > 0 :func:`tuning_factor` (reported only) and :func:`auto_tune`;
2. :func:`shift_loudness`, then :func:`shift_octave`;
3. :func:`confidence_gate` last (ddsp-pd's addition: frames below the gate get f0 = 0).

f0 is clipped to [0, ``midi_to_hz(110)``] after every change of f0. Unlike ddsp >= 2.0
notebooks, the adjusted loudness is what the decoder sees.

Where ddsp-pd departs from the notebook (none of it shows in the reference fixture):

- the confidence gate (the notebook's own ``mask_by_confidence`` is separate and off);
- f0 is also clipped after autotune (the notebook clips only in its octave shifts);
- the clip's quantile transform uses every note-on frame, where ddsp randomly subsamples
  above 100 000 frames (400 s at 250 frames/s), so results are deterministic;
- :func:`tuning_factor` returns a number instead of NaN-driven garbage for degenerate input;
- with ``ddsp-1.6`` statistics the dataset's note-on mean pitch is used (see
  :mod:`ddsp_pd.statistics`).

Power models (DDSP-VST checkpoints and ``.tflite`` files) take frame power where solo models
take loudness. :func:`apply_power_controls` runs the same chain on ``power_db``; only
auto-adjust's octave and level steps differ, because these models come with note-on *ranges*
(:class:`~ddsp_pd.statistics.ModelRanges`: ``metadata.json``, or the same four fields of a
``ddsp-1.6`` ``dataset_statistics.pkl``) and no power distribution (the pickle's quantile
transform is fitted on loudness). :func:`adjust_from_ranges` defines them:

- notes are detected on power, with the power floor (-80 dB) as ``min_db``;
- octave: the whole-octave shift that brings the clip's note-on mean pitch (voiced frames)
  into ``[mean_min_pitch_note, mean_max_pitch_note]``, or nearest to it; no shift when it is
  already inside, and the smallest shift among equals (:func:`range_octave_shift`);
- power: the clip's note-on power range, measured as ddsp measures the model's (per 4 s
  chunk the lowest and highest note-on power, averaged over chunks: :func:`note_range`),
  is mapped linearly onto ``[mean_min_power_note, mean_max_power_note]``; the slope is kept
  within [1/2, 2] (when it is clamped the two ranges' centres still meet), and below the
  quietest note-on frame the map bends so that the -80 dB floor stays put and silence stays
  silent (:func:`map_power_range`). The map applies to every frame, so note-off frames keep their
  place below the notes; quiet, autotune, the shifts and the gate then follow as for loudness.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ddsp_pd.errors import ControlError
from ddsp_pd.statistics import DatasetStatistics, ModelRanges, QuantileTransform

__all__ = [
    "AUTO_ADJUST_FIELDS",
    "CONTROL_RANGES",
    "F0_MAX_HZ",
    "KEY_NAMES",
    "MIN_DB_POWER",
    "MIN_DB_V1",
    "MIN_DB_V3",
    "AdjustReport",
    "AdjustedControls",
    "ControlSettings",
    "RangeAdjustment",
    "adjust_from_ranges",
    "apply_controls",
    "apply_manual_controls",
    "apply_power_controls",
    "apply_quiet",
    "auto_adjust_controls",
    "auto_octave_shift",
    "auto_tune",
    "best_major_key",
    "confidence_gate",
    "count_segments",
    "detect_notes",
    "fit_quantile_transform",
    "hz_to_midi",
    "map_power_range",
    "midi_to_hz",
    "note_range",
    "range_octave_shift",
    "shift_loudness",
    "shift_octave",
    "tuning_factor",
]

MIN_DB_V3 = -80.0  # loudness floor of ddsp >= 2.0 ("v3") models
MIN_DB_V1 = -120.0  # loudness floor of ddsp 1.x ("v1") models
MIN_DB_POWER = -80.0  # power floor of DDSP-VST models (compute_power's range_db)

# Power auto-adjust (apply_power_controls): the chunk over which ddsp took each training
# example's min and max (the Train_VST colab's 4 s examples), the limits of the power map's
# slope, and how far the octave search goes.
EXAMPLE_SECONDS = 4.0
POWER_SLOPE_LIMITS = (0.5, 2.0)
_MAX_AUTO_OCTAVES = 8

# detect_notes' fixed parameters in ddsp.
_NOTE_EXPONENT = 2.0
_NOTE_SMOOTHING = 40
_NOTE_CONFIDENCE_REFERENCE = 0.7

Reason = Literal["ok", "no statistics", "no notes detected", "disabled"]
Level = Literal["loudness", "power"]

# Inclusive ranges of every numeric control (also for the CLI and the OSC server).
CONTROL_RANGES: dict[str, tuple[float, float]] = {
    "octave": (-4.0, 4.0),
    "loudness_db": (-60.0, 60.0),
    "confidence": (0.0, 1.0),
    "quiet": (0.0, 100.0),
    "autotune": (0.0, 1.0),
    "note_threshold": (0.0, 10.0),
}


# --------------------------------------------------------------------------------------
# Pitch units
# --------------------------------------------------------------------------------------


def hz_to_midi(f0_hz: ArrayLike) -> NDArray[np.floating]:
    """MIDI note number of a frequency; 0 Hz (and below) maps to MIDI 0, as in ddsp.

    The result keeps a float input's dtype (float32 stays float32).
    """
    f = _as_float(f0_hz)
    f64 = f.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        midi = 12.0 * (np.log2(f64) - np.log2(440.0)) + 69.0
    return np.where(f64 <= 0.0, 0.0, midi).astype(f.dtype)


def midi_to_hz(midi: ArrayLike) -> NDArray[np.floating]:
    """Frequency of a MIDI note number (no special case: MIDI 0 is 8.18 Hz, as in ddsp)."""
    m = _as_float(midi)
    return (440.0 * 2.0 ** ((m.astype(np.float64) - 69.0) / 12.0)).astype(m.dtype)


F0_MAX_HZ = float(440.0 * 2.0 ** ((110.0 - 69.0) / 12.0))
"""Upper clip of f0 after every change: MIDI 110, about 4186 Hz (the notebook's bound)."""


def _clip_f0(f0_hz: NDArray[np.floating]) -> NDArray[np.floating]:
    return np.clip(f0_hz, 0.0, F0_MAX_HZ).astype(f0_hz.dtype)


# --------------------------------------------------------------------------------------
# The building blocks
# --------------------------------------------------------------------------------------


def _box_smooth(x: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    # Like tf.nn.conv1d(padding='SAME') with a box of ones/size: zero padding, with
    # (size - 1) // 2 frames before and size // 2 after each frame.
    before, after = (size - 1) // 2, size // 2
    padded = np.concatenate([np.zeros(before), x.astype(np.float64), np.zeros(after)])
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    return ((csum[size:] - csum[:-size]) / size).astype(np.float32)


def detect_notes(
    loudness_db: ArrayLike,
    f0_confidence: ArrayLike,
    note_threshold: float = 1.0,
    min_db: float = MIN_DB_V3,
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """Find note-on frames from loudness and smoothed pitch confidence (ddsp's ``detect_notes``).

    ``note_on_value = smooth(confidence**2) * (ld - min_db) / ((mean(ld) - min_db) * 0.7**2)``
    where ``smooth`` is a 40-frame zero-padded box average; a frame is on where the value is
    ``>= note_threshold``. The value is relative to the clip's own mean loudness.

    Returns:
        ``(mask_on, note_on_value)``: bool and float32 arrays ``[n_frames]``.
    """
    ld = np.asarray(loudness_db, dtype=np.float32)
    conf = np.asarray(f0_confidence, dtype=np.float32)
    _check_same_length(ld, conf)
    if ld.size == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float32)
    # float32 throughout, as the library computes it: decides which frames sit on the edge.
    mean_db = np.mean(ld)
    db = _box_smooth(conf**_NOTE_EXPONENT, _NOTE_SMOOTHING) * (ld - np.float32(min_db))
    db_threshold = (mean_db - np.float32(min_db)) * np.float32(
        _NOTE_CONFIDENCE_REFERENCE**_NOTE_EXPONENT
    )
    note_on_value = (db / db_threshold).astype(np.float32)
    return note_on_value >= note_threshold, note_on_value


def fit_quantile_transform(
    loudness_db: ArrayLike,
    mask_on: ArrayLike,
    inv_quantile: QuantileTransform | None = None,
) -> tuple[QuantileTransform, NDArray[np.float32] | None]:
    """Fit a quantile transform on the note-on loudness of this clip (ddsp's function).

    The clip transform has at most 1000 quantiles. Given the dataset's transform
    ``inv_quantile``, note-on frames are mapped to [0, 1] through the clip's transform and back
    through the dataset's, so the clip's note-on loudness distribution becomes the dataset's;
    note-off frames keep their loudness.

    Returns:
        ``(clip_transform, loudness)``; ``loudness`` is None when ``inv_quantile`` is None.
    """
    ld = np.asarray(loudness_db, dtype=np.float32)
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(ld, mask)
    on = ld[mask]
    clip_transform = QuantileTransform.fit(on)
    if inv_quantile is None:
        return clip_transform, None
    # float32 between the two transforms, as in the library.
    u = clip_transform.transform(on)
    out = ld.copy()
    out[mask] = inv_quantile.inverse_transform(u)
    return clip_transform, out


def auto_octave_shift(f0_hz: ArrayLike, mask_on: ArrayLike, mean_pitch: float) -> float:
    """Whole octaves that move the clip's note-on register towards ``mean_pitch`` (MIDI).

    ``p = (mean_pitch - mean(hz_to_midi(f0)[mask_on])) / 12``, rounded with floor if
    ``p > 1.5`` and with ceil otherwise. This is the notebook's rule, quirk included: any gap
    in (0, 1.5] octaves becomes +1 octave and a gap in (-1, 0] none, so the rounding is biased
    upwards; the reference fixture encodes this rule. Unvoiced note-on frames count as MIDI 0,
    as in the library. Returns 0.0 when no frame is on.
    """
    midi = hz_to_midi(np.asarray(f0_hz, dtype=np.float32))
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(midi, mask)
    if not mask.any():
        return 0.0
    diff = (np.float32(mean_pitch) - np.mean(midi[mask])) / np.float32(12.0)
    rounded = np.floor(diff) if diff > 1.5 else np.ceil(diff)
    return float(rounded) + 0.0  # + 0.0 turns -0.0 into 0.0


def apply_quiet(
    loudness_db: ArrayLike,
    mask_on: ArrayLike,
    note_on_value: ArrayLike,
    quiet: float,
) -> NDArray[np.float32]:
    """Turn note-off frames down: ``ld -= quiet * (1 - note_on_value)`` where not on.

    As in the notebook, a note-off frame whose value exceeds 1 (possible with a note
    threshold above 1) is turned up, not down.
    """
    ld = np.asarray(loudness_db, dtype=np.float32).copy()
    mask = np.asarray(mask_on, dtype=bool)
    value = np.asarray(note_on_value, dtype=np.float32)
    _check_same_length(ld, mask, value)
    off = ~mask
    ld[off] -= np.float32(quiet) * (np.float32(1.0) - value[off])
    return ld


def tuning_factor(f0_midi: ArrayLike, f0_confidence: ArrayLike, mask_on: ArrayLike) -> float:
    """Tuning offset in semitones (-0.5 to 0.5, 1-cent steps) of the note-on frames.

    ddsp's ``colab_utils.get_tuning_factor``: each candidate offset is scored by the
    confidence-weighted mean distance to the offset chromatic grid plus the weighted rate of
    grid-note changes (both z-normalised); the lowest score wins. :func:`auto_tune` ignores it
    (in ddsp too): it is reported only. Degenerate inputs (fewer than two note-on frames, or a
    cost that does not vary) contribute zero instead of the library's NaN.
    """
    midi = np.asarray(f0_midi)
    conf = np.asarray(f0_confidence)
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(midi, conf, mask)
    if not mask.any():
        return 0.0
    factors = np.linspace(-0.5, 0.5, 101)
    on = midi[mask][:, np.newaxis]
    diffs = (on - factors[np.newaxis, :]) % 1.0
    diffs[diffs > 0.5] -= 1.0
    weights = conf[mask][:, np.newaxis]
    cost_diffs = np.mean(weights * np.abs(diffs), axis=0)
    snapped = on - diffs
    if snapped.shape[0] >= 2:
        # Exact comparison, as in ddsp: only frames that snap to the very same value count
        # as staying on a note.
        changes = (np.diff(snapped, axis=0) != 0.0).astype(np.float64)
        cost_changes = np.mean(weights[:-1] * changes, axis=0)
    else:
        cost_changes = np.zeros_like(cost_diffs)
    cost = _zscore(cost_changes) + _zscore(cost_diffs)
    return float(factors[int(np.argmin(cost))])


def _zscore(x: NDArray[np.floating]) -> NDArray[np.float64]:
    std = np.std(x)
    if not np.isfinite(std) or std == 0.0:
        return np.zeros(x.shape)
    return (x - np.mean(x)) / std


_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
# 12 major scales over 10 octaves, as ddsp builds them: scale k is the C-major pattern + k.
_SCALES = np.stack([np.ravel([_MAJOR + 12 * i for i in range(10)]) + k for k in range(12)])
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


def best_major_key(f0_midi: ArrayLike, mask_on: ArrayLike) -> int:
    """Index (0 = C) of the major scale whose notes are nearest, on average, to note-on frames."""
    midi = np.asarray(f0_midi)
    mask = np.asarray(mask_on, dtype=bool)
    on = midi[mask]
    if on.size == 0:
        return 0
    return int(np.argmin(np.mean(_scale_distances(on), axis=0)))


def _scale_distances(midi: np.ndarray) -> np.ndarray:
    """``[n, 12]``: each value's distance to the nearest note of each major scale, the same
    numbers as the minimum over every note (the scales are sorted, so only the notes on
    either side of a value can be nearest), at a tenth of the cost: the live auto-adjust
    runs this while a stream plays."""
    dist = np.empty((midi.size, len(_SCALES)), np.result_type(midi, _SCALES))
    last = _SCALES.shape[1] - 1
    for k, scale in enumerate(_SCALES):
        above = np.minimum(np.searchsorted(scale, midi), last)
        below = np.maximum(above - 1, 0)
        dist[:, k] = np.minimum(np.abs(midi - scale[above]), np.abs(midi - scale[below]))
    return dist


def auto_tune(
    f0_midi: ArrayLike,
    tuning_factor: float,
    mask_on: ArrayLike,
    amount: float = 0.0,
    chromatic: bool = False,
) -> NDArray[np.float64]:
    """Move every frame ``amount`` of the way to the nearest note (ddsp's ``auto_tune``).

    By default the notes are those of the major scale that best fits the note-on frames
    (:func:`best_major_key`), and ``tuning_factor`` is ignored, as in ddsp. With
    ``chromatic=True`` the notes are the chromatic grid offset by ``tuning_factor``. All
    frames move, note-off and unvoiced ones included (MIDI 0 is a C: it stays 0 in C major).
    """
    midi = np.asarray(f0_midi)
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(midi, mask)
    if chromatic:
        midi_diff = (midi - tuning_factor) % 1.0
        midi_diff[midi_diff > 0.5] -= 1.0
    else:
        scale = _SCALES[best_major_key(midi, mask)]
        diff_tn = midi[:, np.newaxis] - scale[np.newaxis, :]
        nearest = np.argmin(np.abs(diff_tn), axis=-1)
        midi_diff = np.take_along_axis(diff_tn, nearest[:, np.newaxis], axis=-1)[:, 0]
    return midi - amount * midi_diff


def shift_octave(f0_hz: ArrayLike, octaves: float) -> NDArray[np.float32]:
    """Multiply f0 by ``2 ** octaves`` and clip to [0, :data:`F0_MAX_HZ`]."""
    f0 = np.asarray(f0_hz, dtype=np.float32)
    return _clip_f0(f0 * np.float32(2.0**octaves))


def shift_loudness(loudness_db: ArrayLike, db: float) -> NDArray[np.float32]:
    """Add ``db`` decibels to every frame's loudness."""
    return np.asarray(loudness_db, dtype=np.float32) + np.float32(db)


def confidence_gate(
    f0_hz: ArrayLike, f0_confidence: ArrayLike, threshold: float
) -> NDArray[np.float32]:
    """Set f0 to 0 (no harmonic part) where the pitch confidence is below ``threshold``.

    A threshold of 0 changes nothing.
    """
    f0 = np.asarray(f0_hz, dtype=np.float32)
    conf = np.asarray(f0_confidence, dtype=np.float32)
    _check_same_length(f0, conf)
    return np.where(conf < threshold, np.float32(0.0), f0).astype(np.float32)


def count_segments(mask: ArrayLike) -> int:
    """Number of runs of consecutive True frames (note segments) in a mask."""
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return 0
    return int(m[0]) + int(np.count_nonzero(m[1:] & ~m[:-1]))


# --------------------------------------------------------------------------------------
# Settings and the whole chain
# --------------------------------------------------------------------------------------


# Fields whose user-facing name (CLI option, OSC address) differs from the field's.
_CONTROL_LABELS = {"loudness_db": "loudness"}


@dataclass(frozen=True)
class ControlSettings:
    """Every control of a render, with the notebook's defaults.

    Attributes:
        octave: manual pitch shift in octaves (fractions transpose), [-4, 4].
        loudness_db: manual loudness shift in dB, [-60, 60].
        confidence: f0 confidence gate, [0, 1]: frames below it get f0 = 0.
        adjust: auto-adjust towards the dataset statistics (octave, loudness, quiet, tune).
        quiet: dB by which auto-adjust turns note-off frames down, [0, 100].
        autotune: amount of snapping to the best major scale, [0, 1].
        note_threshold: note-on threshold of :func:`detect_notes`, [0, 10].
    """

    octave: float = 0.0
    loudness_db: float = 0.0
    confidence: float = 0.2
    adjust: bool = True
    quiet: float = 20.0
    autotune: float = 0.0
    note_threshold: float = 1.0

    def validate(self) -> ControlSettings:
        """Check types and ranges; returns ``self`` so it can be chained.

        Raises:
            ControlError: a value is NaN, out of range or of the wrong type.
        """
        if not isinstance(self.adjust, (bool, np.bool_)):
            raise ControlError(f"adjust must be true or false, got {self.adjust!r}")
        for f in fields(self):
            if f.name not in CONTROL_RANGES:
                continue
            value = getattr(self, f.name)
            # Messages name the control as users set it (--loudness, /ddsp/loudness).
            label = _CONTROL_LABELS.get(f.name, f.name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise ControlError(f"{label} must be a number, got {value!r}")
            lo, hi = CONTROL_RANGES[f.name]
            if not math.isfinite(float(value)):
                raise ControlError(f"{label} must be a finite number, got {value!r}")
            if not lo <= float(value) <= hi:
                raise ControlError(f"{label} must be in [{lo:g}, {hi:g}], got {value!r}")
        return self


@dataclass(frozen=True)
class AdjustReport:
    """What auto-adjust did, for the render reply.

    Attributes:
        adjust_requested: the ``adjust`` setting.
        adjust_ran: whether the auto-adjust steps ran.
        reason: 'ok', or why it did not run: 'disabled', 'no statistics',
            'no notes detected'.
        notes_detected: number of note-on frames (0 when note detection did not run).
        note_segments: number of runs of note-on frames.
        auto_octave: octaves auto-adjust shifted f0 by (0.0 when it did not run).
        tuning_factor: the tuning offset in semitones, when autotune ran (reported only).
        detail: more about a 'no statistics' reason, e.g. why the file was unusable.
        level: 'loudness' or 'power': what the level controls worked on.
        level_range_in: power models, when auto-adjust ran: the clip's note-on power range
            (dB) that was mapped ...
        level_range_out: ... onto this one: the model's range, or where the clip's went when
            the map's slope was limited (see :func:`adjust_from_ranges`).
    """

    adjust_requested: bool
    adjust_ran: bool
    reason: Reason
    notes_detected: int = 0
    note_segments: int = 0
    auto_octave: float = 0.0
    tuning_factor: float | None = None
    detail: str = ""
    level: Level = "loudness"
    level_range_in: tuple[float, float] | None = None
    level_range_out: tuple[float, float] | None = None

    @property
    def message(self) -> str:
        """One line for users: what ran, or why auto-adjust was skipped."""
        if self.adjust_ran:
            text = (
                f"auto-adjust: {self.notes_detected} note-on frames in "
                f"{self.note_segments} notes, octave shift {self.auto_octave:+g}"
            )
            if self.level_range_in is not None and self.level_range_out is not None:
                (a, b), (c, d) = self.level_range_in, self.level_range_out
                text += f", {self.level} {a:.1f}..{b:.1f} dB -> {c:.1f}..{d:.1f} dB"
            if self.tuning_factor is not None:
                text += f", tuning {self.tuning_factor * 100:+.0f} cents"
            return text
        if self.reason == "disabled":
            return "auto-adjust: off"
        if self.detail:
            return f"auto-adjust skipped: {self.reason} ({self.detail})"
        return f"auto-adjust skipped: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON or OSC replies."""
        return asdict(self)


@dataclass(frozen=True)
class AdjustedControls:
    """The conditioning the decoder gets, and what auto-adjust found.

    ``level_db`` is loudness (``level='loudness'``, from :func:`apply_controls`) or power
    (``'power'``, from :func:`apply_power_controls`), also readable as :attr:`loudness_db` or
    :attr:`power_db` (the other name raises AttributeError). ``mask_on`` is all False and
    ``note_on_value`` all 0 when note detection did not run.
    """

    f0_hz: NDArray[np.float32]
    level_db: NDArray[np.float32]
    mask_on: NDArray[np.bool_]
    note_on_value: NDArray[np.float32]
    report: AdjustReport
    level: Level = "loudness"

    @property
    def loudness_db(self) -> NDArray[np.float32]:
        """The adjusted loudness (dB); AttributeError for a power model's controls."""
        if self.level != "loudness":
            raise AttributeError("these controls carry power_db (DDSP-VST models), not loudness_db")
        return self.level_db

    @property
    def power_db(self) -> NDArray[np.float32]:
        """The adjusted power (dB); AttributeError for a loudness model's controls."""
        if self.level != "power":
            raise AttributeError("these controls carry loudness_db, not power_db")
        return self.level_db


def _snap_to_scale(
    f0_hz: np.ndarray, conf: np.ndarray, mask_on: np.ndarray, amount: float
) -> tuple[NDArray[np.float32], float]:
    """Autotune: f0 moved ``amount`` of the way to the best-fitting major scale, and the
    tuning factor found on the way."""
    midi = hz_to_midi(f0_hz)
    tuning = tuning_factor(midi, conf, mask_on)
    tuned = auto_tune(midi, tuning, mask_on, amount=amount)
    return _clip_f0(midi_to_hz(tuned).astype(np.float32)), tuning


def _manual_controls(
    f0_hz: np.ndarray, level_db: np.ndarray, conf: np.ndarray, settings: ControlSettings
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The user's own shifts (level in dB, octave), then the confidence gate, applied last."""
    level_db = shift_loudness(level_db, settings.loudness_db)
    f0_hz = shift_octave(f0_hz, settings.octave)
    return confidence_gate(f0_hz, conf, settings.confidence), level_db


def apply_controls(
    f0_hz: ArrayLike,
    f0_confidence: ArrayLike,
    loudness_db: ArrayLike,
    settings: ControlSettings,
    statistics: DatasetStatistics | None,
    min_db: float = MIN_DB_V3,
    statistics_problem: str | None = None,
) -> AdjustedControls:
    """Apply every control in the reference order (see the module docstring):
    :func:`auto_adjust_controls`, then :func:`apply_manual_controls`.

    Args:
        f0_hz, f0_confidence, loudness_db: frame features, ``[n_frames]`` each.
        settings: the controls; validated here.
        statistics: the model's dataset statistics, or None (auto-adjust is then skipped and
            the report says 'no statistics').
        min_db: the model's loudness floor: :data:`MIN_DB_V3` (-80) for ddsp >= 2.0 models,
            :data:`MIN_DB_V1` (-120) for 1.x and 2020 models.
        statistics_problem: why ``statistics`` is None (e.g. the file was refused), copied to
            ``report.detail`` when auto-adjust was requested.

    Raises:
        ControlError: invalid settings, or feature arrays of different lengths or shapes.
    """
    auto = auto_adjust_controls(
        f0_hz, f0_confidence, loudness_db, settings, statistics, min_db, statistics_problem
    )
    return apply_manual_controls(auto, f0_confidence, settings)


#: The fields of :class:`ControlSettings` that :func:`auto_adjust_controls` reads (a cache of
#: its result stays valid while these and the features are the same).
AUTO_ADJUST_FIELDS = ("adjust", "note_threshold", "quiet", "autotune")


def auto_adjust_controls(
    f0_hz: ArrayLike,
    f0_confidence: ArrayLike,
    loudness_db: ArrayLike,
    settings: ControlSettings,
    statistics: DatasetStatistics | None,
    min_db: float = MIN_DB_V3,
    statistics_problem: str | None = None,
) -> AdjustedControls:
    """The first half of :func:`apply_controls` (same arguments): note detection, the
    octave and the loudness fitted to the dataset, quiet and autotune. It reads only the
    :data:`AUTO_ADJUST_FIELDS` of ``settings``, so a change of the loudness shift, the
    octave or the confidence gate (:func:`apply_manual_controls`) can reuse its result."""
    settings.validate()
    f0 = np.array(f0_hz, dtype=np.float32)
    conf = np.asarray(f0_confidence, dtype=np.float32)
    ld = np.array(loudness_db, dtype=np.float32)
    if f0.ndim != 1:
        raise ControlError(f"f0_hz must be one value per frame, got shape {f0.shape}")
    _check_same_length(f0, conf, ld)
    n = f0.size
    mask_on = np.zeros(n, dtype=bool)
    note_on_value = np.zeros(n, dtype=np.float32)
    auto_octave = 0.0
    tuning: float | None = None
    ran = False

    if not settings.adjust:
        reason: Reason = "disabled"
    elif statistics is None:
        reason = "no statistics"
    else:
        mask_on, note_on_value = detect_notes(ld, conf, settings.note_threshold, min_db)
        if not mask_on.any():
            reason = "no notes detected"
        else:
            reason, ran = "ok", True
            auto_octave = auto_octave_shift(f0, mask_on, statistics.mean_pitch)
            f0 = shift_octave(f0, auto_octave)
            _, ld_norm = fit_quantile_transform(ld, mask_on, statistics.quantile_transform)
            assert ld_norm is not None
            ld = apply_quiet(ld_norm, mask_on, note_on_value, settings.quiet)
            if settings.autotune > 0:
                f0, tuning = _snap_to_scale(f0, conf, mask_on, settings.autotune)

    report = AdjustReport(
        adjust_requested=bool(settings.adjust),
        adjust_ran=ran,
        reason=reason,
        notes_detected=int(np.count_nonzero(mask_on)),
        note_segments=count_segments(mask_on),
        auto_octave=auto_octave,
        tuning_factor=tuning,
        detail=(statistics_problem or "") if reason == "no statistics" else "",
    )
    return AdjustedControls(
        f0_hz=f0,
        level_db=ld,
        mask_on=mask_on,
        note_on_value=note_on_value,
        report=report,
    )


def apply_manual_controls(
    auto: AdjustedControls, f0_confidence: ArrayLike, settings: ControlSettings
) -> AdjustedControls:
    """The second half of :func:`apply_controls`: the user's loudness shift and octave,
    then the confidence gate, on the result of :func:`auto_adjust_controls` (not changed)."""
    settings.validate()
    conf = np.asarray(f0_confidence, dtype=np.float32)
    f0, ld = _manual_controls(auto.f0_hz, auto.level_db, conf, settings)
    return replace(auto, f0_hz=f0, level_db=ld)


# --------------------------------------------------------------------------------------
# Power models: auto-adjust from note-on ranges
# --------------------------------------------------------------------------------------


def note_range(
    values: ArrayLike, mask_on: ArrayLike, n_chunks: int = 1
) -> tuple[float, float] | None:
    """The mean over chunks of each chunk's lowest and highest note-on value.

    This is how ddsp's ``compute_dataset_statistics`` makes ``mean_min_*_note`` and
    ``mean_max_*_note`` over training examples: the frames are cut into ``n_chunks``
    near-equal chunks (``numpy.array_split``), chunks without a note-on frame are left out.

    Returns:
        ``(mean_min, mean_max)``, or None when no frame is on.
    """
    x = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(x, mask)
    lows, highs = [], []
    for idx in np.array_split(np.arange(x.size), max(1, min(int(n_chunks), max(x.size, 1)))):
        on = x[idx][mask[idx]]
        if on.size:
            lows.append(on.min())
            highs.append(on.max())
    if not lows:
        return None
    return float(np.mean(lows)), float(np.mean(highs))


def range_octave_shift(mean_pitch: float, pitch_min: float, pitch_max: float) -> float:
    """Whole octaves that bring ``mean_pitch`` (MIDI) into ``[pitch_min, pitch_max]``.

    Among shifts of -8..8 octaves the one whose result lies nearest the range wins (distance
    0 inside it); among equals the smallest shift, then the one nearest the range's centre.
    So a pitch already inside the range is not moved, and when the range is narrower than
    an octave and the pitch falls between two octaves of it, it goes to the nearer edge.
    """
    centre = 0.5 * (pitch_min + pitch_max)

    def cost(k: int) -> tuple[float, int, float]:
        p = mean_pitch + 12.0 * k
        gap = max(pitch_min - p, p - pitch_max, 0.0)
        return (gap, abs(k), abs(p - centre))

    best = min(range(-_MAX_AUTO_OCTAVES, _MAX_AUTO_OCTAVES + 1), key=cost)
    return float(best)


def map_power_range(
    power_db: ArrayLike,
    clip_range: tuple[float, float],
    model_range: tuple[float, float],
    floor_db: float = MIN_DB_POWER,
    knee_db: float | None = None,
) -> tuple[NDArray[np.float32], float]:
    """Map power so that the clip's note-on range ``(lo, hi)`` lands on the model's.

    ``y = model_centre + s (x - clip_centre)`` with ``s = (model width) / (clip width)``
    limited to :data:`POWER_SLOPE_LIMITS` (1 when the clip's range is a single value): when
    ``s`` is not limited, ``lo`` maps to the model's low end and ``hi`` to its high end.
    Below ``knee_db`` (default ``lo``; :func:`adjust_from_ranges` passes the quietest note-on
    frame, so that every note-on frame is on the straight line) the map runs straight from
    ``(floor_db, floor_db)`` to ``(knee, y(knee))``, so the floor (silence) stays where it is
    and the map stays monotonic; values at or below the floor are unchanged, and no value is
    mapped below it.

    Returns:
        ``(mapped float32 power, s)``.
    """
    x = np.asarray(power_db, dtype=np.float64)
    lo, hi = float(clip_range[0]), float(clip_range[1])
    m_lo, m_hi = float(model_range[0]), float(model_range[1])
    width = hi - lo
    slope = (m_hi - m_lo) / width if width > 0 else 1.0
    slope = float(np.clip(slope, *POWER_SLOPE_LIMITS))
    clip_centre, model_centre = 0.5 * (lo + hi), 0.5 * (m_lo + m_hi)
    y = model_centre + slope * (x - clip_centre)
    knee = lo if knee_db is None else float(knee_db)
    if knee > floor_db:
        y_knee = model_centre + slope * (knee - clip_centre)
        bend = max(y_knee - floor_db, 0.0) / (knee - floor_db)
        below = x < knee
        y[below] = floor_db + bend * (x[below] - floor_db)
    y = np.maximum(y, floor_db)
    y = np.where(x <= floor_db, x, y)
    return y.astype(np.float32), slope


@dataclass(frozen=True)
class RangeAdjustment:
    """What :func:`adjust_from_ranges` found and did.

    Attributes:
        octave: whole octaves to shift f0 by.
        power_db: the mapped power of every frame (float32).
        clip_pitch: mean MIDI pitch of the voiced note-on frames (None: none voiced).
        clip_power_range: the clip's note-on power range (dB), as :func:`note_range` gives it.
        model_power_range: the model's (``mean_min_power_note``, ``mean_max_power_note``).
        power_slope: the slope of the power map (1 = only shifted).
    """

    octave: float
    power_db: NDArray[np.float32]
    clip_pitch: float | None
    clip_power_range: tuple[float, float]
    model_power_range: tuple[float, float]
    power_slope: float

    @property
    def mapped_power_range(self) -> tuple[float, float]:
        """Where the clip's range went: the model's, unless the slope was limited."""
        lo, hi = self.clip_power_range
        centre = 0.5 * sum(self.model_power_range)
        half = 0.5 * self.power_slope * (hi - lo)
        return centre - half, centre + half


def adjust_from_ranges(
    f0_hz: ArrayLike,
    power_db: ArrayLike,
    mask_on: ArrayLike,
    ranges: ModelRanges,
    frame_rate: float,
    example_seconds: float = EXAMPLE_SECONDS,
    floor_db: float = MIN_DB_POWER,
) -> RangeAdjustment:
    """Octave and power adjustment of a clip towards a power model's note-on ranges.

    The clip's note-on mean pitch (voiced frames only) goes through
    :func:`range_octave_shift` against ``ranges.pitch_min_note .. pitch_max_note``; its
    note-on power range, :func:`note_range` over chunks of about ``example_seconds``
    (``max(1, round(n_frames / (example_seconds * frame_rate)))`` chunks), is mapped onto
    ``ranges.power_min_db .. power_max_db`` by :func:`map_power_range`.

    Raises:
        ControlError: no frame is on, arrays of different lengths, or a bad frame rate.
    """
    f0 = np.asarray(f0_hz, dtype=np.float32)
    pw = np.asarray(power_db, dtype=np.float32)
    mask = np.asarray(mask_on, dtype=bool)
    _check_same_length(f0, pw, mask)
    if not (frame_rate > 0 and example_seconds > 0):
        raise ControlError(
            f"frame_rate ({frame_rate}) and example_seconds ({example_seconds}) must be > 0"
        )
    n_chunks = max(1, round(pw.size / (example_seconds * frame_rate)))
    clip_range = note_range(pw, mask, n_chunks)
    if clip_range is None:
        raise ControlError("no note-on frames to adjust from")
    voiced = mask & (f0 > 0)
    clip_pitch: float | None = None
    octave = 0.0
    if voiced.any():
        clip_pitch = float(np.mean(hz_to_midi(f0[voiced]).astype(np.float64)))
        octave = range_octave_shift(clip_pitch, ranges.pitch_min_note, ranges.pitch_max_note)
    model_range = (ranges.power_min_db, ranges.power_max_db)
    knee = min(clip_range[0], float(np.min(pw[mask])))
    mapped, slope = map_power_range(pw, clip_range, model_range, floor_db, knee)
    return RangeAdjustment(
        octave=octave,
        power_db=mapped,
        clip_pitch=clip_pitch,
        clip_power_range=clip_range,
        model_power_range=model_range,
        power_slope=slope,
    )


def apply_power_controls(
    f0_hz: ArrayLike,
    f0_confidence: ArrayLike,
    power_db: ArrayLike,
    settings: ControlSettings,
    ranges: ModelRanges | None,
    frame_rate: float,
    statistics_problem: str | None = None,
) -> AdjustedControls:
    """Every control for a power model (DDSP-VST checkpoint or ``.tflite``), on ``power_db``.

    The order of :func:`apply_controls`: if auto-adjust is on and ``ranges`` are given,
    :func:`detect_notes` on power (floor :data:`MIN_DB_POWER`) and, if any frame is on,
    :func:`adjust_from_ranges` (octave and power map), :func:`apply_quiet`, autotune; then
    the power shift (``settings.loudness_db`` dB added to power), the octave shift and the
    confidence gate. The result has ``level='power'``.

    Args:
        f0_hz, f0_confidence, power_db: frame features, ``[n_frames]`` each.
        settings: the controls; validated here.
        ranges: the model's note-on ranges (``ModelRanges.from_metadata`` of a ``.tflite``,
            ``DatasetStatistics.model_ranges()`` of a checkpoint), or None (auto-adjust is
            then skipped and the report says 'no statistics').
        frame_rate: frames per second of the features (for the 4 s chunks of the ranges).
        statistics_problem: why ``ranges`` is None, copied to ``report.detail``.

    Raises:
        ControlError: invalid settings, or feature arrays of different lengths or shapes.
    """
    settings.validate()
    f0 = np.array(f0_hz, dtype=np.float32)
    conf = np.asarray(f0_confidence, dtype=np.float32)
    pw = np.array(power_db, dtype=np.float32)
    if f0.ndim != 1:
        raise ControlError(f"f0_hz must be one value per frame, got shape {f0.shape}")
    _check_same_length(f0, conf, pw)
    n = f0.size
    mask_on = np.zeros(n, dtype=bool)
    note_on_value = np.zeros(n, dtype=np.float32)
    auto_octave = 0.0
    tuning: float | None = None
    ran = False
    range_in: tuple[float, float] | None = None
    range_out: tuple[float, float] | None = None

    if not settings.adjust:
        reason: Reason = "disabled"
    elif ranges is None:
        reason = "no statistics"
    else:
        mask_on, note_on_value = detect_notes(pw, conf, settings.note_threshold, MIN_DB_POWER)
        if not mask_on.any():
            reason = "no notes detected"
        else:
            reason, ran = "ok", True
            adjustment = adjust_from_ranges(f0, pw, mask_on, ranges, frame_rate)
            auto_octave = adjustment.octave
            range_in, range_out = adjustment.clip_power_range, adjustment.mapped_power_range
            f0 = shift_octave(f0, auto_octave)
            pw = apply_quiet(adjustment.power_db, mask_on, note_on_value, settings.quiet)
            if settings.autotune > 0:
                f0, tuning = _snap_to_scale(f0, conf, mask_on, settings.autotune)

    f0, pw = _manual_controls(f0, pw, conf, settings)

    report = AdjustReport(
        adjust_requested=bool(settings.adjust),
        adjust_ran=ran,
        reason=reason,
        notes_detected=int(np.count_nonzero(mask_on)),
        note_segments=count_segments(mask_on),
        auto_octave=auto_octave,
        tuning_factor=tuning,
        detail=(statistics_problem or "") if reason == "no statistics" else "",
        level="power",
        level_range_in=range_in,
        level_range_out=range_out,
    )
    return AdjustedControls(
        f0_hz=f0,
        level_db=pw,
        mask_on=mask_on,
        note_on_value=note_on_value,
        report=report,
        level="power",
    )


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _as_float(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _check_same_length(*arrays: np.ndarray) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ControlError(
            "frame features have different lengths: " + ", ".join(str(s) for s in shapes)
        )
