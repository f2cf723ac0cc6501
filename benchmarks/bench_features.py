"""Feature extraction speed, and pitch-tracker accuracy on the fixture clips.

    python benchmarks/bench_features.py                 # timings for 10 s of audio
    python benchmarks/bench_features.py --accuracy      # accuracy table over fixtures/audio
    python benchmarks/bench_features.py --accuracy --crepe-full-weights PATH/weights.h5

Timings are the median of 3 runs after one warm-up run. The accuracy table scores each
tracker at the model frame rate (250 frames/s, hop 64 at 16 kHz) against the clips'
ground truth (10 ms steps): raw pitch accuracy = share of frames with ``eval_pitch`` = 1
whose f0 is within 50 cents; voicing accuracy = share of frames with ``eval_voicing`` = 1
where ``confidence >= threshold`` agrees with the ground truth's voiced flag.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from ddsp_pd.audio_io import load_audio, read_audio, resample
from ddsp_pd.loudness import loudness_v1, loudness_v3
from ddsp_pd.pitch import TRACKERS, CrepeTracker, PitchTracker, get_tracker

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared")) / "fixtures" / "audio"
SAMPLE_RATE = 16000
HOP = 64
FRAME_RATE = SAMPLE_RATE / HOP


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_truth(wav: Path) -> np.ndarray:
    """Ground truth rows: time_s, f0_hz, voiced, eval_pitch, eval_voicing."""
    return np.loadtxt(wav.with_suffix(".f0.csv"), delimiter=",", skiprows=1, ndmin=2)


def at_times(values: np.ndarray, times: np.ndarray, frame_rate: float, log: bool) -> np.ndarray:
    """A frame track read at arbitrary times by linear (or log-linear) interpolation."""
    grid = np.arange(len(values)) / frame_rate
    if not log:
        return np.interp(times, grid, values)
    positive = np.where(values > 0, values, np.nan)
    out = np.exp2(np.interp(times, grid, np.log2(np.nan_to_num(positive, nan=1.0))))
    # A time next to an f0 = 0 frame has no pitch.
    nearest_zero = np.interp(times, grid, (values <= 0).astype(float)) > 0
    return np.where(nearest_zero, 0.0, out)


def score(
    f0: np.ndarray, conf: np.ndarray, truth: np.ndarray, thresholds: list[float]
) -> dict[str, float]:
    """Raw pitch accuracy (50 cents) and voicing accuracy for each threshold."""
    t, ref, voiced, eval_pitch, eval_voicing = (truth[:, i] for i in range(5))
    est = at_times(f0, t, FRAME_RATE, log=True)
    c = at_times(conf, t, FRAME_RATE, log=False)
    pitch_rows = (eval_pitch > 0) & (ref > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cents = np.abs(1200 * np.log2(est[pitch_rows] / ref[pitch_rows]))
    out = {
        "rpa": float(np.mean(np.nan_to_num(cents, nan=1e9) <= 50)),
        "n_pitch": int(pitch_rows.sum()),
    }
    vrows = eval_voicing > 0
    truth_voiced = voiced[vrows] > 0
    for th in thresholds:
        est_voiced = c[vrows] >= th
        out[f"vacc@{th:g}"] = float(np.mean(est_voiced == truth_voiced))
        out[f"recall@{th:g}"] = float(np.mean(est_voiced[truth_voiced]))
        out[f"false@{th:g}"] = float(np.mean(est_voiced[~truth_voiced]))
    return out


def accuracy_table(trackers: list[PitchTracker], thresholds: list[float]) -> None:
    """Print per-clip and overall scores of each tracker on every fixture clip."""
    clips = sorted(AUDIO.glob("*.wav"))
    if not clips:
        sys.exit(f"no clips in {AUDIO}")
    ten_s = load_audio(AUDIO / "midi_flute.wav", SAMPLE_RATE)[: 10 * SAMPLE_RATE]
    print(f"clips: {len(clips)} from {AUDIO}; frame rate {FRAME_RATE:g}/s")
    for tracker in trackers:
        seconds = median_time(lambda tr=tracker: tr.track(ten_s, SAMPLE_RATE, FRAME_RATE, 2500))
        totals: dict[str, list[float]] = {}
        weights: dict[str, list[int]] = {}
        print(f"\n== {tracker.name}: {seconds:.3f} s per 10 s (median of 3)")
        for wav in clips:
            audio = load_audio(wav, SAMPLE_RATE)
            n_frames = len(audio) // HOP
            f0, conf = tracker.track(audio, SAMPLE_RATE, FRAME_RATE, n_frames)
            truth = load_truth(wav)
            result = score(f0, conf, truth, thresholds)
            voicing = "  ".join(f"{th:g}:{result[f'vacc@{th:g}']:.3f}" for th in thresholds)
            print(f"  {wav.stem:<22} rpa {result['rpa']:.3f}  voicing acc {voicing}")
            n_voicing = int((truth[:, 4] > 0).sum())
            for key, value in result.items():
                if key == "n_pitch":
                    continue
                totals.setdefault(key, []).append(value)
                weights.setdefault(key, []).append(result["n_pitch"] if key == "rpa" else n_voicing)
        mean = {k: float(np.average(v, weights=weights[k])) for k, v in totals.items()}
        print(f"  {'ALL (frame-weighted)':<22} rpa {mean['rpa']:.3f}")
        for th in thresholds:
            print(
                f"    threshold {th:g}: voicing acc {mean[f'vacc@{th:g}']:.3f}, "
                f"recall {mean[f'recall@{th:g}']:.3f}, false alarms {mean[f'false@{th:g}']:.3f}"
            )


def timings(trackers: list[PitchTracker], wav: Path) -> None:
    """Print load+resample, loudness and f0 times for 10 s of ``wav``."""
    data, rate = read_audio(wav)
    ten_s = data[: 10 * rate]
    # Time resampling from 44.1 kHz, the usual input rate, whatever the clip's own rate is.
    at_44k = resample(ten_s, rate, 44100)
    audio = load_audio(wav, SAMPLE_RATE)[: 10 * SAMPLE_RATE]
    n_frames = len(audio) // HOP
    cpu = platform.processor() or platform.machine()
    print(f"10 s of {wav.name}; {cpu}, {os.cpu_count()} CPUs; median of 3 after a warm-up")
    rows: list[tuple[str, Callable[[], object]]] = [
        (f"load {wav.name} at 16 kHz", lambda: load_audio(wav, SAMPLE_RATE)),
        ("resample 10 s 44.1 -> 16 kHz", lambda: resample(at_44k, 44100, SAMPLE_RATE)),
        ("loudness v3", lambda: loudness_v3(audio, SAMPLE_RATE, HOP)),
        ("loudness v1", lambda: loudness_v1(audio, SAMPLE_RATE, HOP)),
    ]
    for tracker in trackers:
        rows.append(
            (
                f"f0 {tracker.name}",
                lambda tr=tracker: tr.track(audio, SAMPLE_RATE, FRAME_RATE, n_frames),
            )
        )
    for label, fn in rows:
        print(f"  {label:<32} {median_time(fn):.4f} s")


def main() -> None:
    """Parse the arguments and run the timings or the accuracy table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", action="store_true", help="score trackers on fixtures/audio")
    parser.add_argument("--trackers", default=",".join(TRACKERS), help="comma-separated names")
    parser.add_argument("--crepe-full-weights", help="weights.h5 of CREPE full, if not installed")
    parser.add_argument("--thresholds", default="0.1,0.2,0.3,0.5", help="confidence thresholds")
    parser.add_argument("--wav", default=str(AUDIO / "midi_flute.wav"), help="clip to time")
    args = parser.parse_args()
    trackers: list[PitchTracker] = []
    for name in args.trackers.split(","):
        if name == "crepe-full" and args.crepe_full_weights:
            trackers.append(CrepeTracker("full", weights_file=args.crepe_full_weights))
        else:
            trackers.append(get_tracker(name))
    if args.accuracy:
        accuracy_table(trackers, [float(x) for x in args.thresholds.split(",")])
    else:
        timings(trackers, Path(args.wav))


if __name__ == "__main__":
    main()
