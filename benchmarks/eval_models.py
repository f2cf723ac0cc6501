"""Quality of the shipped instruments on their held-out melodies, next to the default model.

    python benchmarks/eval_models.py                  # all four instruments
    python benchmarks/eval_models.py flute cello      # some of them
    python benchmarks/eval_models.py --markdown       # the table of docs/models.md

For each instrument (``scripts/make_instrument_model.py``: flute, clarinet, cello, violin)
the held-out melodies are ``build/instruments/<name>/heldout/*.wav`` (3 x 10 s, a seed the
training set never used; rendered with fluidsynth by the recipe's ``audio`` stage, which this
script runs when they are missing). Each melody is resynthesised by the instrument's model
``pd_<name>`` (its ddsp checkpoint and its DDSP-VST ``.tflite``) and by today's default
model ``default`` (a violin, config ``small``), through :class:`ddsp_pd.transfer.Engine` as
``ddsp-pd render`` does, with auto-adjust off (resynthesis: the input's own f0 and level;
auto-adjust would move the default's octave on the flute and the cello and the distance
would then measure the transposition), the confidence gate at its default 0.2, seed 0, no
normalisation. Then, per model and instrument:

**Pitch accuracy**: the share of voiced frames whose output f0 is within 50 cents of the
input's f0. Voiced frames are those the input's tracker (Praat, ddsp-pd's default) calls
clearly voiced (confidence >= 0.5) and that pass the gate; the input's f0 is the f0 the model
was given (the tracker's f0 of the input); the output's f0 is the same tracker's on the
output, at the model's frame rate. A frame whose output the tracker calls unvoiced counts
as a miss. Frames are pooled over the melodies. With ``--crepe`` the output is also tracked
by CREPE tiny (same voiced frames, same input f0): Praat's autocorrelation sometimes locks
onto a subharmonic of a model's output although its harmonics are exact multiples of f0
by construction, so the two figures bracket the tracker's share of the misses.

**Spectral distance** (dB, lower is better): a multi-scale log-spectral distance between
input ``x`` and output ``y`` after level matching. ``y`` is scaled by one gain so that its RMS
equals ``x``'s over the melody (so the figure measures timbre and envelope, not overall
level). For each FFT size n in (2048, 1024, 512, 256, 128, 64) the magnitude spectrograms
``X_n``, ``Y_n`` (Hann window of n, hop n/4, as the training loss) are clipped from below at
``max(X_n) * 10^(-80/20)`` (80 dB under the input's peak, so silence compares as equal) and

    d_n = mean over frames and bins of |20 log10 X_n - 20 log10 Y_n|

The distance is the mean of the six ``d_n``, averaged over the melodies. 0 dB is a perfect
resynthesis (up to level).

Prints one line per model and instrument (and the markdown table with ``--markdown``);
figures only, no assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from ddsp_pd.audio_io import load_audio
from ddsp_pd.controls import ControlSettings
from ddsp_pd.pitch import PitchTracker, get_tracker
from ddsp_pd.transfer import Engine, RenderResult, RenderSettings

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "instruments"
CHECKPOINTS = ROOT / "checkpoints"
INSTRUMENTS = ("flute", "clarinet", "cello", "violin")
FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
FLOOR_DB = 80.0
MAX_CENTS = 50.0
VOICED_CONFIDENCE = 0.5


@dataclass
class Score:
    """One model on one instrument's held-out melodies."""

    model: str
    instrument: str
    voiced: int
    within: int
    distances: list[float]
    seconds: float
    #: Frames within 50 cents when the output is tracked by CREPE tiny (``--crepe``).
    within_crepe: int | None = None

    @property
    def accuracy(self) -> float:
        """Share of voiced frames within 50 cents."""
        return self.within / self.voiced if self.voiced else float("nan")

    @property
    def accuracy_crepe(self) -> float:
        """Share of voiced frames within 50 cents, output tracked by CREPE tiny."""
        if self.within_crepe is None or not self.voiced:
            return float("nan")
        return self.within_crepe / self.voiced

    @property
    def distance(self) -> float:
        """Mean spectral distance over the melodies (dB)."""
        return float(np.mean(self.distances))


def _magnitudes(audio: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| with a Hann window of ``n_fft`` and hop ``n_fft / 4`` (frames x bins)."""
    hop = n_fft // 4
    padded = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2))
    n_frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(padded[index] * np.hanning(n_fft), axis=1))


def spectral_distance(x: np.ndarray, y: np.ndarray) -> float:
    """The multi-scale level-matched log-spectral distance of the module doc (dB)."""
    n = min(len(x), len(y))
    x, y = x[:n].astype(np.float64), y[:n].astype(np.float64)
    rms_x, rms_y = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(y**2))
    if rms_y > 0:
        y = y * (rms_x / rms_y)
    per_scale = []
    for n_fft in FFT_SIZES:
        mx, my = _magnitudes(x, n_fft), _magnitudes(y, n_fft)
        floor = max(float(mx.max()), 1e-12) * 10 ** (-FLOOR_DB / 20)
        diff = 20 * np.abs(np.log10(np.maximum(mx, floor)) - np.log10(np.maximum(my, floor)))
        per_scale.append(float(diff.mean()))
    return float(np.mean(per_scale))


def pitch_hits(
    result: RenderResult, sample_rate: int, frame_rate: float, tracker: PitchTracker
) -> tuple[int, int]:
    """(voiced frames, frames within 50 cents) of one render, as the module doc defines."""
    features = result.features
    asked = result.adjusted.f0_hz
    n = min(len(asked), int(len(result.audio) * frame_rate / sample_rate))
    out_f0, out_conf = tracker.track(result.audio, sample_rate, frame_rate, n)
    voiced = (features.f0_confidence[:n] >= VOICED_CONFIDENCE) & (asked[:n] > 0)
    cents = 1200 * np.abs(np.log2(np.maximum(out_f0[voiced], 1e-3) / asked[:n][voiced]))
    within = int(np.sum((cents <= MAX_CENTS) & (out_conf[voiced] > 0)))
    return int(voiced.sum()), within


def heldout(instrument: str) -> list[Path]:
    """The held-out melodies of an instrument, rendered first if they are missing."""
    folder = BUILD / instrument / "heldout"
    if not folder.is_dir() or not list(folder.glob("*.wav")):
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_instrument_model.py"), instrument,
             "--stage", "audio"],
            check=True,
        )  # fmt: skip
    return sorted(folder.glob("*.wav"))


def evaluate(
    engine: Engine, model: str, instrument: str, clips: list[Path], crepe: bool = False
) -> Score:
    """Score one model (a name or a path) on one instrument's held-out clips; ``crepe`` also
    tracks the output with CREPE tiny (the voiced frames and the input's f0 stay Praat's)."""
    tracker = get_tracker("praat")
    crepe_tracker = get_tracker("crepe-tiny") if crepe else None
    loaded = engine.load_model(model)
    settings = RenderSettings(
        controls=ControlSettings(adjust=False), sample_rate=None, normalize=False, seed=0
    )
    rate = loaded.model.sample_rate
    frame_rate = loaded.model.frame_rate
    voiced = within = within_crepe = 0
    distances = []
    start = time.perf_counter()
    for clip in clips:
        result = engine.render(loaded, settings, input_path=clip)
        source = load_audio(clip, rate)
        v, w = pitch_hits(result, rate, frame_rate, tracker)
        voiced += v
        within += w
        if crepe_tracker is not None:
            within_crepe += pitch_hits(result, rate, frame_rate, crepe_tracker)[1]
        distances.append(spectral_distance(source, result.audio))
    name = Path(model).name if os.sep in str(model) else str(model)
    seconds = time.perf_counter() - start
    return Score(
        name, instrument, voiced, within, distances, seconds, within_crepe if crepe else None
    )


def main() -> None:
    """Evaluate the chosen instruments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instruments", nargs="*", default=list(INSTRUMENTS))
    parser.add_argument("--markdown", action="store_true", help="print the docs table")
    parser.add_argument("--no-tflite", action="store_true", help="skip the .tflite exports")
    parser.add_argument("--crepe", action="store_true", help="also track outputs with CREPE tiny")
    args = parser.parse_args()
    engine = Engine(tracker="praat", checkpoint_dirs=[CHECKPOINTS])
    scores: list[Score] = []
    for instrument in args.instruments:
        clips = heldout(instrument)
        name = f"pd_{instrument}"
        models = [name, str(CHECKPOINTS / name / f"{name}.tflite"), "default"]
        if args.no_tflite:
            models.pop(1)
        for model in models:
            score = evaluate(engine, model, instrument, clips, crepe=args.crepe)
            scores.append(score)
            print(
                f"{instrument:9s} {score.model:18s} pitch {score.accuracy:6.1%} of "
                f"{score.voiced:5d} voiced frames (CREPE tiny {score.accuracy_crepe:6.1%})  "
                f"distance {score.distance:6.2f} dB "
                f"(clips {', '.join(f'{d:.2f}' for d in score.distances)})  "
                f"{score.seconds:.1f} s",
                flush=True,
            )
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    if args.markdown:
        print("\n| instrument | model | pitch within 50 cents (Praat) | (CREPE tiny) | "
              "spectral distance (dB) |")  # fmt: skip
        print("|---|---|---|---|---|")
        for s in scores:
            print(f"| {s.instrument} | `{s.model}` | {s.accuracy:.1%} ({s.voiced} frames) "
                  f"| {s.accuracy_crepe:.1%} | {s.distance:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
