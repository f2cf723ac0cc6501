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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ddsp_pd.errors import ControlError
from ddsp_pd.statistics import DatasetStatistics, QuantileTransform

__all__ = [
    "CONTROL_RANGES",
    "F0_MAX_HZ",
    "KEY_NAMES",
    "MIN_DB_V1",
    "MIN_DB_V3",
    "AdjustReport",
    "AdjustedControls",
    "ControlSettings",
    "apply_controls",
    "apply_quiet",
    "auto_octave_shift",
    "auto_tune",
    "best_major_key",
    "confidence_gate",
    "count_segments",
    "detect_notes",
    "fit_quantile_transform",
    "hz_to_midi",
    "midi_to_hz",
    "shift_loudness",
    "shift_octave",
    "tuning_factor",
]

MIN_DB_V3 = -80.0  # loudness floor of ddsp >= 2.0 ("v3") models
MIN_DB_V1 = -120.0  # loudness floor of ddsp 1.x ("v1") models

# detect_notes' fixed parameters in ddsp.
_NOTE_EXPONENT = 2.0
_NOTE_SMOOTHING = 40
_NOTE_CONFIDENCE_REFERENCE = 0.7

Reason = Literal["ok", "no statistics", "no notes detected", "disabled"]

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
    dist = np.min(np.abs(on[:, np.newaxis, np.newaxis] - _SCALES[np.newaxis]), axis=-1)
    return int(np.argmin(np.mean(dist, axis=0)))


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
    """

    adjust_requested: bool
    adjust_ran: bool
    reason: Reason
    notes_detected: int = 0
    note_segments: int = 0
    auto_octave: float = 0.0
    tuning_factor: float | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """One line for users: what ran, or why auto-adjust was skipped."""
        if self.adjust_ran:
            text = (
                f"auto-adjust: {self.notes_detected} note-on frames in "
                f"{self.note_segments} notes, octave shift {self.auto_octave:+g}"
            )
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

    ``mask_on`` is all False and ``note_on_value`` all 0 when note detection did not run.
    """

    f0_hz: NDArray[np.float32]
    loudness_db: NDArray[np.float32]
    mask_on: NDArray[np.bool_]
    note_on_value: NDArray[np.float32]
    report: AdjustReport


def apply_controls(
    f0_hz: ArrayLike,
    f0_confidence: ArrayLike,
    loudness_db: ArrayLike,
    settings: ControlSettings,
    statistics: DatasetStatistics | None,
    min_db: float = MIN_DB_V3,
    statistics_problem: str | None = None,
) -> AdjustedControls:
    """Apply every control in the reference order (see the module docstring).

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
                midi = hz_to_midi(f0)
                tuning = tuning_factor(midi, conf, mask_on)
                tuned = auto_tune(midi, tuning, mask_on, amount=settings.autotune)
                f0 = _clip_f0(midi_to_hz(tuned).astype(np.float32))

    ld = shift_loudness(ld, settings.loudness_db)
    f0 = shift_octave(f0, settings.octave)
    f0 = confidence_gate(f0, conf, settings.confidence)

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
        loudness_db=ld,
        mask_on=mask_on,
        note_on_value=note_on_value,
        report=report,
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
