"""MIDI-driven synthesis: notes in, f0 and level curves out (DDSP-VST's synth mode).

:class:`NoteSynth` is monophonic with last-note priority: the newest held note sounds, and
releasing it returns to the newest one still held (legato, no new attack). f0 is the note's
frequency plus pitch bend (``bend`` in [-1, 1] times ``bend_range`` semitones, 2 by
default), gliding over ``portamento`` seconds when set; the level is an ADSR envelope times
the velocity: ``top_db + 20 log10(envelope * velocity / 127)``, floored at the model's
silence, where ``top_db`` is the level of a loud note in the model's training data (see
:func:`note_level_db`). A new note's attack starts from the envelope's current value, so
fast repeated notes do not click. Confidence is 1 once a note has sounded, so the
confidence gate never silences a note; before the first note f0 is 0.

:func:`read_midi_notes` reads a standard MIDI file with ``mido`` (tempo changes honoured,
the drum channel skipped) and :func:`mono_events` reduces it to one line, the highest
sounding note where notes overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddsp_pd.errors import ControlError, InputError

__all__ = [
    "Adsr",
    "MidiNote",
    "NoteEvent",
    "NoteSynth",
    "mono_events",
    "note_curves",
    "note_level_db",
    "read_midi_notes",
]

_DRUM_CHANNEL = 9  # channel 10 in 1-based numbering


@dataclass(frozen=True)
class Adsr:
    """An envelope: attack, decay and release in seconds, sustain level in [0, 1]."""

    attack: float = 0.02
    decay: float = 0.1
    sustain: float = 0.8
    release: float = 0.2

    def validate(self) -> Adsr:
        """Check ranges; returns ``self``. Raises ControlError."""
        for name in ("attack", "decay", "release"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 10.0):
                raise ControlError(f"ADSR {name} must be in [0, 10] seconds, got {value}")
        if not (math.isfinite(self.sustain) and 0.0 <= self.sustain <= 1.0):
            raise ControlError(f"ADSR sustain must be in [0, 1], got {self.sustain}")
        return self


def note_level_db(statistics: object = None, ranges: object = None) -> float:
    """The level (dB) of a full-velocity note: the 90th percentile of the note-on loudness
    of a solo model's dataset, the top of a power model's note-on range, else -20 dB."""
    if ranges is not None:
        return float(ranges.power_max_db)  # type: ignore[attr-defined]
    transform = getattr(statistics, "quantile_transform", None)
    if transform is not None:
        return float(transform.inverse_transform(np.array([0.9]))[0])
    return -20.0


def _midi_to_hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * np.exp2((np.asarray(midi, np.float64) - 69.0) / 12.0)


class NoteSynth:
    """Monophonic note state turned into frames of (f0, confidence, level)."""

    def __init__(
        self,
        frame_rate: float,
        top_db: float = -20.0,
        floor_db: float = -80.0,
        adsr: Adsr | None = None,
        bend_range: float = 2.0,
        portamento: float = 0.0,
    ) -> None:
        self.frame_rate = float(frame_rate)
        self.top_db = float(top_db)
        self.floor_db = float(floor_db)
        self.adsr = (adsr or Adsr()).validate()
        self.bend_range = float(bend_range)
        self.set_portamento(portamento)
        self.reset()

    def reset(self) -> None:
        """All notes off, envelope at 0, no pitch yet."""
        self._held: list[tuple[int, float]] = []  # (pitch, velocity), newest last
        self._stage = "idle"
        self._env = 0.0
        self._release_from = 0.0
        self._velocity = 0.0
        self._pitch: float | None = None  # the pitch sounding now (MIDI, may be gliding)
        self._target: float | None = None
        self._glide_step = 0.0
        self._bend = 0.0

    # ------------------------------------------------------------ events
    def note_on(self, pitch: float, velocity: float) -> None:
        """Start a note (velocity 0 is a note off, as MIDI has it)."""
        if not (0 <= pitch <= 127) or not (0 <= velocity <= 127):
            raise ControlError(f"note {pitch} velocity {velocity}: both must be in [0, 127]")
        if velocity == 0:
            self.note_off(pitch)
            return
        pitch = round(pitch)
        self._held = [(p, v) for p, v in self._held if p != pitch]
        self._held.append((pitch, float(velocity)))
        self._start(pitch, float(velocity), attack=True)

    def note_off(self, pitch: float) -> None:
        """Release a note; the newest note still held sounds again (legato)."""
        pitch = round(pitch)
        sounding = self._held[-1][0] if self._held else None
        self._held = [(p, v) for p, v in self._held if p != pitch]
        if pitch != sounding:
            return
        if self._held:
            p, v = self._held[-1]
            self._start(p, v, attack=False)
        elif self._stage != "idle":
            self._stage = "release"
            self._release_from = self._env

    def all_notes_off(self) -> None:
        """Release everything."""
        self._held = []
        if self._stage != "idle":
            self._stage = "release"
            self._release_from = self._env

    def bend(self, amount: float) -> None:
        """Pitch bend in [-1, 1] (times ``bend_range`` semitones)."""
        if not (math.isfinite(amount) and -1.0 <= amount <= 1.0):
            raise ControlError(f"bend must be in [-1, 1], got {amount}")
        self._bend = float(amount)

    def set_adsr(self, attack: float, decay: float, sustain: float, release: float) -> None:
        """A new envelope (applies from the next frame)."""
        self.adsr = Adsr(float(attack), float(decay), float(sustain), float(release)).validate()

    def set_portamento(self, seconds: float) -> None:
        """Glide time between notes (0: none)."""
        if not (math.isfinite(seconds) and 0.0 <= seconds <= 10.0):
            raise ControlError(f"portamento must be in [0, 10] seconds, got {seconds}")
        self.portamento = float(seconds)

    def _start(self, pitch: int, velocity: float, attack: bool) -> None:
        self._velocity = velocity
        self._target = float(pitch)
        if self._pitch is None or self.portamento <= 0.0:
            self._pitch = float(pitch)
            self._glide_step = 0.0
        else:
            frames = max(1.0, self.portamento * self.frame_rate)
            self._glide_step = (self._target - self._pitch) / frames
        if attack or self._stage in ("idle", "release"):
            self._stage = "attack"

    # ------------------------------------------------------------ frames
    def _envelope_step(self) -> float:
        a = self.adsr
        dt = 1.0 / self.frame_rate
        if self._stage == "attack":
            self._env = 1.0 if a.attack <= 0 else min(1.0, self._env + dt / a.attack)
            if self._env >= 1.0:
                self._stage = "decay"
        elif self._stage == "decay":
            step = 1.0 if a.decay <= 0 else (1.0 - a.sustain) * dt / a.decay
            self._env = max(a.sustain, self._env - step)
            if self._env <= a.sustain:
                self._stage = "sustain"
        elif self._stage == "sustain":
            self._env = a.sustain
        elif self._stage == "release":
            step = self._release_from if a.release <= 0 else self._release_from * dt / a.release
            self._env = max(0.0, self._env - max(step, 1e-9))
            if self._env <= 0.0:
                self._stage = "idle"
        return self._env

    def _pitch_step(self) -> float | None:
        if self._pitch is None or self._target is None:
            return None
        if self._glide_step:
            self._pitch += self._glide_step
            if (self._target - self._pitch) * self._glide_step <= 0:
                self._pitch = self._target
                self._glide_step = 0.0
        return self._pitch

    def frames(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` frames: f0 (Hz), confidence, level (dB), float32."""
        envelope = np.empty(n)
        pitch = np.zeros(n)
        sounding = np.zeros(n, bool)
        for i in range(n):
            envelope[i] = self._envelope_step()
            p = self._pitch_step()
            if p is not None:
                pitch[i] = p + self._bend * self.bend_range
                sounding[i] = True
        amplitude = envelope * (self._velocity / 127.0)
        with np.errstate(divide="ignore"):
            level = self.top_db + 20.0 * np.log10(amplitude)
        level = np.where(amplitude > 0, np.maximum(level, self.floor_db), self.floor_db)
        f0 = np.where(sounding, _midi_to_hz(pitch), 0.0)
        confidence = sounding.astype(np.float32)
        return f0.astype(np.float32), confidence, level.astype(np.float32)


# ------------------------------------------------------------------ MIDI files


@dataclass(frozen=True)
class MidiNote:
    """A note of a MIDI file: start and end in seconds, pitch and velocity (0-127)."""

    start: float
    end: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class NoteEvent:
    """One event of a monophonic line: ``velocity`` 0 ends the line's note."""

    time: float
    pitch: int
    velocity: int


def read_midi_notes(path: str | Path) -> list[MidiNote]:
    """The notes of a standard MIDI file, in seconds (tempo map honoured), drums skipped.

    Raises :class:`InputError` for a file mido cannot read or one without notes.
    """
    try:
        import mido
    except ImportError as exc:  # pragma: no cover - a dependency
        raise InputError("reading MIDI files needs the mido package (pip install mido)") from exc
    path = Path(path)
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"cannot read the MIDI file {path}: {reason}") from exc
    now = 0.0
    open_notes: dict[tuple[int, int], tuple[float, int]] = {}
    notes: list[MidiNote] = []
    # Iterating a MidiFile merges its tracks and gives each message's delta in seconds,
    # following every tempo change.
    for msg in midi:
        now += float(msg.time)
        if msg.type not in ("note_on", "note_off") or msg.channel == _DRUM_CHANNEL:
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            if key in open_notes:  # a repeated note-on ends the previous one
                start, velocity = open_notes.pop(key)
                notes.append(MidiNote(start, now, msg.note, velocity))
            open_notes[key] = (now, msg.velocity)
        elif key in open_notes:
            start, velocity = open_notes.pop(key)
            notes.append(MidiNote(start, now, msg.note, velocity))
    for (_, pitch), (start, velocity) in open_notes.items():
        notes.append(MidiNote(start, now, pitch, velocity))
    notes = [n for n in notes if n.end > n.start]
    if not notes:
        raise InputError(f"the MIDI file {path} has no notes (drums are skipped)")
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def mono_events(notes: list[MidiNote]) -> list[NoteEvent]:
    """One line from overlapping notes: at every moment the highest sounding note."""
    points: list[tuple[float, int, MidiNote]] = []
    for note in notes:
        points.append((note.end, 0, note))  # ends before starts at the same time
        points.append((note.start, 1, note))
    points.sort(key=lambda p: (p[0], p[1]))
    sounding: list[MidiNote] = []
    current: MidiNote | None = None
    events: list[NoteEvent] = []
    i = 0
    while i < len(points):
        t = points[i][0]
        while i < len(points) and points[i][0] == t:
            _, is_start, note = points[i]
            if is_start:
                sounding.append(note)
            elif note in sounding:
                sounding.remove(note)
            i += 1
        top = max(sounding, key=lambda n: (n.pitch, n.start)) if sounding else None
        if top is not current:
            if top is None:
                assert current is not None
                events.append(NoteEvent(t, current.pitch, 0))
            elif current is None or top.pitch != current.pitch or top.start == t:
                events.append(NoteEvent(t, top.pitch, top.velocity))
            current = top
    return events


def note_curves(
    events: list[NoteEvent],
    synth: NoteSynth,
    n_frames: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``[n_frames]`` of (f0, confidence, level) playing ``events`` on ``synth``;
    an event at time t acts from frame ``ceil(t * frame_rate)`` on."""
    f0 = np.zeros(n_frames, np.float32)
    conf = np.zeros(n_frames, np.float32)
    level = np.zeros(n_frames, np.float32)
    done = 0
    line = sorted(events, key=lambda e: e.time)
    sounding: int | None = None
    for event in [*line, None]:
        until = n_frames
        if event is not None:
            until = min(n_frames, math.ceil(event.time * synth.frame_rate))
        if until > done:
            f0[done:until], conf[done:until], level[done:until] = synth.frames(until - done)
            done = until
        if event is None:
            break
        if event.velocity == 0:
            synth.note_off(event.pitch)
            sounding = None
        else:
            if sounding is not None and sounding != event.pitch:
                synth.note_off(sounding)
            synth.note_on(event.pitch, event.velocity)
            sounding = event.pitch
    return f0, conf, level
