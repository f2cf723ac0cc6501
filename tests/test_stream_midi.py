"""MIDI-driven synthesis: the note state, MIDI files, and rendered pitch against the notes."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest

from ddsp_pd.errors import ControlError, InputError
from ddsp_pd.pitch import get_tracker
from ddsp_pd.stream.midi import (
    Adsr,
    MidiNote,
    NoteEvent,
    NoteSynth,
    mono_events,
    read_midi_notes,
)
from ddsp_pd.stream.midi_render import render_midi
from ddsp_pd.stream.models import open_live_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "default"
FR = 250.0
#: (MIDI note, seconds): stepwise notes in the default model's range, each followed by a
#: rest; the second half plays at another tempo (the tempo map must be honoured).
MELODY = [(67, 0.5), (69, 0.5), (71, 0.5), (72, 0.75), (74, 0.75), (72, 0.75), (71, 0.75)]
REST = 0.125


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def write_melody(path: Path) -> list[tuple[float, float, int]]:
    """A MIDI file of :data:`MELODY` (120 bpm, then 80 bpm from the fourth note), with a
    chord tone under some notes (the highest must win); returns (start, end, note)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    notes, now, tempo = [], 0.0, 0.5  # seconds per beat
    for i, (note, seconds) in enumerate(MELODY):
        if i == 3:
            track.append(mido.MetaMessage("set_tempo", tempo=750000, time=0))
            tempo = 0.75
        ticks = round(seconds / tempo * 480)
        rest = round(REST / tempo * 480)
        track.append(mido.Message("note_on", note=note, velocity=100, time=0))
        if i % 2:  # a lower note under it
            track.append(mido.Message("note_on", note=note - 5, velocity=80, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=ticks))
        if i % 2:
            track.append(mido.Message("note_off", note=note - 5, velocity=0, time=0))
        track.append(mido.Message("note_on", note=0, velocity=0, time=rest))  # a rest
        start = now
        now += ticks / 480 * tempo
        notes.append((start, now, note))
        now += rest / 480 * tempo
    mid.save(str(path))
    return notes


def test_note_synth_last_note_priority_adsr_and_bend():
    synth = NoteSynth(FR, top_db=0.0, floor_db=-80.0, adsr=Adsr(0.02, 0.1, 0.5, 0.1))
    f0, conf, level = synth.frames(10)
    assert np.all(f0 == 0) and np.all(conf == 0) and np.all(level == -80.0)
    synth.note_on(60, 127)
    f0, conf, level = synth.frames(100)
    np.testing.assert_allclose(f0, _midi_hz(60), rtol=1e-5)
    assert level[4] == pytest.approx(0.0, abs=1e-3)  # attack peak after 20 ms at full level
    assert level[-1] == pytest.approx(20 * np.log10(0.5), abs=1e-3)  # sustain
    synth.note_on(64, 127)  # newest wins
    assert synth.frames(1)[0][0] == pytest.approx(_midi_hz(64), rel=1e-5)
    synth.note_off(64)  # back to the held 60, legato
    assert synth.frames(1)[0][0] == pytest.approx(_midi_hz(60), rel=1e-5)
    synth.bend(1.0)
    assert synth.frames(1)[0][0] == pytest.approx(_midi_hz(62), rel=1e-5)
    synth.bend(0.0)
    synth.note_on(60, 0)  # velocity 0 = note off: release to the floor
    _, _, level = synth.frames(40)
    assert level[-1] == -80.0 and np.all(np.diff(level) <= 1e-6)
    with pytest.raises(ControlError):
        synth.bend(2.0)
    with pytest.raises(ControlError):
        synth.set_adsr(0.1, 0.1, 1.5, 0.1)


def test_portamento_glides_between_notes():
    synth = NoteSynth(FR, portamento=0.1)
    synth.note_on(60, 100)
    synth.frames(5)
    synth.note_on(72, 100)
    f0 = synth.frames(40)[0]
    midi = 69 + 12 * np.log2(f0 / 440.0)
    assert midi[0] == pytest.approx(60 + 12 / 25, abs=1e-3)  # 25 frames of glide
    assert np.all(np.diff(midi) >= 0) and midi[-1] == pytest.approx(72, abs=1e-4)


def test_midi_file_tempo_map_and_highest_note(tmp_path):
    path = tmp_path / "melody.mid"
    expected = write_melody(path)
    notes = read_midi_notes(path)
    top = [n for n in notes if n.velocity == 100]  # the chord tones have velocity 80
    starts = [(round(n.start, 6), round(n.end, 6), n.pitch) for n in top]
    assert starts == [(round(s, 6), round(e, 6), p) for s, e, p in expected]
    events = mono_events(notes)
    ons = [(round(e.time, 6), e.pitch) for e in events if e.velocity]
    assert ons == [(round(s, 6), p) for s, _, p in expected]  # the lower notes never sound
    offs = [round(e.time, 6) for e in events if e.velocity == 0]
    assert offs == [round(e, 6) for _, e, _ in expected]


def test_mono_line_returns_to_a_held_lower_note():
    notes = [MidiNote(0.0, 2.0, 60, 90), MidiNote(0.5, 1.0, 67, 100)]
    assert mono_events(notes) == [
        NoteEvent(0.0, 60, 90),
        NoteEvent(0.5, 67, 100),
        NoteEvent(1.0, 60, 90),
        NoteEvent(2.0, 60, 0),
    ]


def test_a_midi_file_without_notes_or_not_midi_is_refused(tmp_path):
    empty = mido.MidiFile()
    empty.tracks.append(mido.MidiTrack())
    empty.save(str(tmp_path / "empty.mid"))
    with pytest.raises(InputError, match="no notes"):
        read_midi_notes(tmp_path / "empty.mid")
    (tmp_path / "bad.mid").write_bytes(b"not midi at all")
    with pytest.raises(InputError, match="cannot read"):
        read_midi_notes(tmp_path / "bad.mid")


def track(audio: np.ndarray) -> np.ndarray:
    """f0 of rendered audio (16 kHz) by the offline tracker, at 250 frames/s."""
    return get_tracker("praat").track(audio, 16000, FR, audio.size // 64)[0]


def pitch_accuracy(audio_or_f0: np.ndarray, notes, offset_s: float = 0.0, f0=None) -> float:
    """Share of note frames whose f0 (offline tracker) is within 30 cents of the note."""
    f0 = track(audio_or_f0) if f0 is None else f0
    within = []
    for start, end, note in notes:
        a, b = round((start + offset_s) * FR), round((end + offset_s) * FR)
        cents = 1200 * np.abs(np.log2(np.maximum(f0[a:b], 1e-3) / _midi_hz(note)))
        within.append(cents <= 30)
    return float(np.mean(np.concatenate(within)))


def test_a_rendered_midi_file_plays_its_notes(tmp_path):
    path = tmp_path / "melody.mid"
    notes = write_melody(path)
    audio = render_midi(path, open_live_model(DEFAULT))
    assert audio.size >= notes[-1][1] * 16000
    accuracy = pitch_accuracy(audio, notes)
    print(f"render of a MIDI file: {accuracy:.3f} of note frames within 30 cents")
    assert accuracy >= 0.95
