#!/usr/bin/env python
"""Make the training audio of the default model (and the example inputs) with fluidsynth.

Seeded random melodies (scales, arpeggios, leaps, held notes with swells and vibrato, rests,
legato and detached playing, varied dynamics) are written as Standard MIDI Files and rendered
with fluidsynth and the FluidR3 General MIDI soundfont (MIT licence) to 16 kHz mono WAV.

    python scripts/make_training_audio.py data/violin --program 40 --clips 10 --seconds 30
    python scripts/make_training_audio.py --examples examples

Needs the `fluidsynth` binary and /usr/share/sounds/sf2/FluidR3_GM.sf2
(Debian: apt-get install fluidsynth fluid-soundfont-gm). Same seed, same notes; the rendered
samples depend on the fluidsynth version (2.3.1 made the shipped model's data).
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 16000
TICKS_PER_BEAT = 480

#: Playable MIDI range per General MIDI program that we use (lowest, highest note).
RANGES = {
    40: (55, 88),  # violin: G3 .. E6
    41: (48, 79),  # viola
    42: (36, 67),  # cello
    56: (55, 82),  # trumpet
    68: (58, 86),  # oboe
    71: (50, 84),  # clarinet
    73: (60, 93),  # flute
    53: (52, 74),  # voice oohs
}

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


# --------------------------------------------------------------------------- Standard MIDI File
def _varlen(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


@dataclass
class MidiTrack:
    """Timed channel events of one monophonic part, written as a format-0 SMF."""

    bpm: float
    events: list[tuple[int, int, bytes]] = field(default_factory=list)

    def add(self, tick: int, data: bytes, order: int = 1) -> None:
        """Add raw event bytes at an absolute tick; `order` sorts events sharing a tick."""
        self.events.append((int(tick), order, data))

    def note(self, start: int, end: int, pitch: int, velocity: int) -> None:
        """One note; at a shared tick offs sort before ons, so legato stays monophonic."""
        self.add(start, bytes([0x90, pitch, max(1, min(127, velocity))]), order=2)
        self.add(end, bytes([0x80, pitch, 64]), order=0)

    def control(self, tick: int, number: int, value: int) -> None:
        """A control change (CC1 modulation = vibrato depth, CC11 expression = dynamics)."""
        self.add(tick, bytes([0xB0, number, max(0, min(127, int(value)))]), order=1)

    def to_bytes(self, program: int) -> bytes:
        """The whole file: header chunk plus one track chunk."""
        tempo = round(60_000_000 / self.bpm)
        body = bytearray()
        body += _varlen(0) + b"\xff\x51\x03" + tempo.to_bytes(3, "big")
        body += _varlen(0) + bytes([0xC0, program])
        last = 0
        for tick, _, data in sorted(self.events, key=lambda e: (e[0], e[1])):
            body += _varlen(tick - last) + data
            last = tick
        body += _varlen(TICKS_PER_BEAT) + b"\xff\x2f\x00"
        header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
        return header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


# --------------------------------------------------------------------------- melodies
DYNAMICS = (38, 52, 68, 84, 100, 116)  # pp .. ff as note velocities


@dataclass
class _Writer:
    """Appends phrases to a track and keeps the time cursor (in ticks)."""

    rng: np.random.Generator
    track: MidiTrack
    low: int
    high: int
    tick: int = 0

    def scale_notes(self, tonic: int, mode: tuple[int, ...]) -> list[int]:
        notes = [tonic + 12 * octave + step for octave in range(-4, 5) for step in mode]
        return sorted(n for n in notes if self.low <= n <= self.high)

    def play(
        self,
        pitches: list[int],
        beats: list[float],
        velocities: list[int],
        legato: bool,
        swell: bool = False,
        vibrato: int = 0,
    ) -> None:
        """Play notes back to back; legato notes fill their step, detached ones 55-85 % of it."""
        for pitch, beat, velocity in zip(pitches, beats, velocities, strict=True):
            length = round(beat * TICKS_PER_BEAT)
            sounding = length if legato else round(length * self.rng.uniform(0.55, 0.85))
            self.track.control(self.tick, 1, vibrato)
            if swell:
                self._swell(self.tick, sounding)
            else:
                self.track.control(self.tick, 11, int(self.rng.integers(90, 128)))
            self.track.note(self.tick, self.tick + sounding, pitch, velocity)
            self.tick += length

    def _swell(self, start: int, length: int) -> None:
        """Expression ramps over a held note: crescendo, decrescendo, or both (messa di voce)."""
        shape = self.rng.choice(["cresc", "decresc", "messa"])
        lo, hi = int(self.rng.integers(40, 75)), int(self.rng.integers(105, 128))
        steps = max(2, length // 60)
        for i in range(steps + 1):
            x = i / steps
            if shape == "cresc":
                y = x
            elif shape == "decresc":
                y = 1.0 - x
            else:
                y = 1.0 - abs(2.0 * x - 1.0)
            self.track.control(start + round(x * length * 0.98), 11, lo + (hi - lo) * y)

    def rest(self, beats: float) -> None:
        self.tick += round(beats * TICKS_PER_BEAT)

    def dynamics(self, n: int) -> list[int]:
        """Velocities for n notes: a base level, a hairpin across the phrase, some jitter."""
        start = DYNAMICS[int(self.rng.integers(0, len(DYNAMICS)))]
        end = DYNAMICS[int(self.rng.integers(0, len(DYNAMICS)))]
        ramp = np.linspace(start, end, n) + self.rng.normal(0.0, 5.0, n)
        return [int(np.clip(v, 25, 127)) for v in ramp]


def _phrase(w: _Writer, tonic: int, mode: tuple[int, ...]) -> None:
    """One randomly chosen phrase type."""
    rng = w.rng
    notes = w.scale_notes(tonic, mode)
    kinds = ["scale", "arpeggio", "held", "leaps", "repeated"]
    kind = rng.choice(kinds, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    legato = bool(rng.random() < 0.6)
    if kind == "scale":
        n = int(rng.integers(5, 14))
        start = int(rng.integers(0, max(1, len(notes) - n)))
        run = notes[start : start + n]
        if rng.random() < 0.5:
            run = run[::-1]
        beat = float(rng.choice([0.25, 0.5, 0.5, 1.0]))
        velocities = w.dynamics(len(run))
        w.play(run, [beat] * len(run), velocities, legato, vibrato=int(rng.integers(0, 40)))
    elif kind == "arpeggio":
        root = int(rng.integers(0, max(1, len(notes) - 7)))
        chord = [notes[i] for i in (root, root + 2, root + 4, root + 7) if i < len(notes)]
        arp = chord + chord[-2::-1] if rng.random() < 0.5 else chord
        beat = float(rng.choice([0.5, 0.75, 1.0]))
        velocities = w.dynamics(len(arp))
        w.play(arp, [beat] * len(arp), velocities, legato, vibrato=int(rng.integers(0, 50)))
    elif kind == "held":
        n = int(rng.integers(1, 4))
        held = [int(rng.choice(notes)) for _ in range(n)]
        beats = [float(rng.uniform(2.0, 6.0)) for _ in range(n)]
        velocity = [int(rng.integers(50, 115))] * n
        w.play(held, beats, velocity, legato=True, swell=True, vibrato=int(rng.integers(30, 90)))
    elif kind == "leaps":
        n = int(rng.integers(4, 10))
        idx = int(rng.integers(0, len(notes)))
        seq = []
        for _ in range(n):
            idx = int(np.clip(idx + rng.integers(-5, 6), 0, len(notes) - 1))
            seq.append(notes[idx])
        beats = [float(rng.choice([0.5, 1.0, 1.5, 2.0])) for _ in range(n)]
        w.play(seq, beats, w.dynamics(n), legato, vibrato=int(rng.integers(0, 60)))
    else:
        pitch = int(rng.choice(notes))
        n = int(rng.integers(3, 9))
        w.play([pitch] * n, [0.5] * n, w.dynamics(n), legato=False)


def melody(rng: np.random.Generator, program: int, seconds: float) -> MidiTrack:
    """A seeded random melody of about `seconds` for one GM program, within its range."""
    low, high = RANGES.get(program, (55, 84))
    bpm = float(rng.uniform(66, 132))
    track = MidiTrack(bpm=bpm)
    w = _Writer(rng, track, low, high)
    total = round(seconds * bpm / 60 * TICKS_PER_BEAT)
    w.rest(0.25)
    while w.tick < total:
        tonic = int(rng.integers(low, low + 12))
        mode = (MAJOR, MINOR, HARMONIC_MINOR)[int(rng.integers(0, 3))]
        for _ in range(int(rng.integers(1, 4))):
            _phrase(w, tonic, mode)
            if rng.random() < 0.5:
                w.rest(float(rng.choice([0.25, 0.5, 1.0, 2.0])))
    return track


# --------------------------------------------------------------------------- rendering
def render(track: MidiTrack, program: int, seconds: float | None, out_wav: Path) -> np.ndarray:
    """Render a track with fluidsynth (no reverb or chorus) to 16 kHz mono at -1 dBFS peak."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        sys.exit("needs fluidsynth and FluidR3_GM.sf2 (apt-get install fluid-soundfont-gm)")
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "melody.mid"
        wav = Path(tmp) / "render.wav"
        mid.write_bytes(track.to_bytes(program))
        # Render at 44.1 kHz (the soundfont's own rate) and resample with a proper filter.
        subprocess.run(
            ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", "44100",
             "-T", "wav", "-O", "float", "-F", str(wav), str(SOUNDFONT), str(mid)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ")
    if seconds is not None:
        mono = mono[: round(seconds * SAMPLE_RATE)]
    peak = float(np.max(np.abs(mono))) or 1.0
    mono = (mono * (10 ** (-1 / 20) / peak)).astype(np.float32)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out_wav, mono, SAMPLE_RATE, subtype="PCM_16")
    return mono


#: The example inputs of the README's quick start: other timbres than the violin model's.
EXAMPLES = {
    "melody": (73, 5.0, 7),  # a flute
    "voice_oohs": (53, 5.0, 5),
}


def main(argv: list[str] | None = None) -> None:
    """Command line entry: training clips into a folder, or the example inputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--program", type=int, default=40, help="GM program (40 = violin)")
    parser.add_argument("--clips", type=int, default=10, help="number of clips")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", action="store_true", help="write the example inputs")
    args = parser.parse_args(argv)
    if args.examples:
        for name, (program, seconds, seed) in EXAMPLES.items():
            track = melody(np.random.default_rng(seed), program, seconds)
            render(track, program, seconds, args.out / f"{name}.wav")
            print(f"wrote {args.out / f'{name}.wav'}")
        return
    for i in range(args.clips):
        rng = np.random.default_rng([args.seed, args.program, i])
        track = melody(rng, args.program, args.seconds)
        path = args.out / f"gm{args.program:03d}_{i:03d}.wav"
        render(track, args.program, args.seconds, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
