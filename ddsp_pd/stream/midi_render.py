"""Offline rendering of a MIDI file: ``ddsp-pd render song.mid -c CKPT -o out.wav``.

The file's notes become one line (the highest sounding note where notes overlap, tempo
changes honoured), the line becomes frame curves through the live engine's
:class:`~ddsp_pd.stream.midi.NoteSynth`, and the curves go through the same frame pipeline
as a live stream (controls, model, synthesis), so a MIDI file renders as ``ddsp-pd live``
would play it. Auto-adjust does not apply to notes (they are what they are); octave,
loudness and the other shifts do.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ddsp_pd.controls import ControlSettings
from ddsp_pd.stream.controls import LiveAdjust, LiveControls
from ddsp_pd.stream.engine import FramePipeline
from ddsp_pd.stream.midi import (
    Adsr,
    NoteSynth,
    mono_events,
    note_curves,
    note_level_db,
    read_midi_notes,
)
from ddsp_pd.stream.models import LiveModel

__all__ = ["MIDI_SUFFIXES", "TAIL_SECONDS", "midi_curves", "render_midi"]

MIDI_SUFFIXES = (".mid", ".midi")
#: Silence rendered after the last note's release (the reverb's tail).
TAIL_SECONDS = 1.0
_BLOCK_FRAMES = 4000


def midi_curves(
    path: str | Path, model: LiveModel, adsr: Adsr | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame curves (f0, confidence, level) of a MIDI file for ``model``."""
    adsr = (adsr or Adsr()).validate()
    events = mono_events(read_midi_notes(path))
    end = max(e.time for e in events)
    n_frames = math.ceil((end + adsr.release + TAIL_SECONDS) * model.frame_rate) + 1
    synth = NoteSynth(
        model.frame_rate, note_level_db(model.statistics, model.ranges), model.min_db, adsr
    )
    return note_curves(events, synth, n_frames)


def render_midi(
    path: str | Path,
    model: LiveModel,
    settings: ControlSettings | None = None,
    seed: int = 0,
    adsr: Adsr | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Audio at the model's rate of a MIDI file (every note, then the reverb's tail)."""
    f0, conf, level = midi_curves(path, model, adsr)
    settings = replace((settings or ControlSettings()).validate(), adjust=False)
    controls = LiveControls(model.frame_rate, model.min_db, settings, LiveAdjust(1.0, 0.0))
    if backend is None:
        from ddsp_pd.inference import kernels

        backend = kernels.resolve_backend("auto")
    pipeline = FramePipeline(model, controls, seed, backend)
    pieces = []
    for start in range(0, f0.size, _BLOCK_FRAMES):
        stop = start + _BLOCK_FRAMES
        pieces.append(pipeline.run(f0[start:stop], conf[start:stop], level[start:stop]))
    audio = np.concatenate(pieces)
    # The stream is the render, later by the noise filter's delay.
    return audio[pipeline.synth.delay :]


def render_midi_command(
    input_path: Path,
    checkpoint: str | None,
    output: Path | None,
    audio_format: str | None,
    subtype: str | None,
    sample_rate: int | None,
    seed: int,
    normalize: bool,
    settings: ControlSettings,
) -> tuple[Path, str]:
    """``ddsp-pd render song.mid``: check the output, render, write atomically.

    Returns the output path and the line to print. The output rate is ``sample_rate`` or
    the model's. Raises :class:`~ddsp_pd.errors.DdspPdError` (one line) on any problem.
    """
    import time

    from ddsp_pd.audio_io import (
        EXTENSION_BY_FORMAT,
        check_encodable,
        output_format,
        resample,
        write_audio_atomic,
    )
    from ddsp_pd.errors import OutputError
    from ddsp_pd.output_path import check_writable, same_file
    from ddsp_pd.stream.models import open_live_model
    from ddsp_pd.transfer import normalize_peak

    started = time.perf_counter()
    read_midi_notes(input_path)  # a bad file is refused before the model loads
    if output is None:
        extension = EXTENSION_BY_FORMAT[audio_format.upper()] if audio_format else ".wav"
        output = Path(f"{input_path.stem}.ddsp{extension}")
    fmt, subtype = output_format(output, audio_format, subtype)
    if same_file(output, input_path):
        raise OutputError(f"refusing to write over the input {input_path}")
    check_writable(output)
    model = open_live_model(checkpoint)
    rate = int(sample_rate or model.sample_rate)
    check_encodable(fmt, subtype, rate)
    audio = render_midi(input_path, model, settings, seed)
    if rate != model.sample_rate:
        audio = resample(audio, model.sample_rate, rate)
    gain = ""
    if normalize:
        audio, gain_db = normalize_peak(audio)
        gain = f", normalised by {gain_db:+.1f} dB"
    write_audio_atomic(output, audio, rate, fmt, subtype)
    seconds = len(audio) / rate
    return output, (
        f"wrote {output} ({fmt} {subtype}, {seconds:.2f} s at {rate} Hz{gain}) from the notes "
        f"of {input_path.name} in {time.perf_counter() - started:.2f} s"
    )
