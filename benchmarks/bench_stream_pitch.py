"""The live f0 tracker (``ddsp_pd.stream.pitch``) against the offline default and the truth.

For every clip of ``../shared/fixtures/audio/``: raw pitch accuracy (50 cents) and voicing
accuracy at confidence thresholds, for the offline Praat tracker and for the live YIN
tracker as the stream analyser runs it (causal windows ending ``lookahead`` samples after
each frame's centre, clips pushed in blocks), plus the lag (frames) at which the live track
best matches the truth, and the cost per frame.

    python benchmarks/bench_stream_pitch.py [--lookahead -1 256] [--window 640]

(``--lookahead -1``: the analyser's default, which centres the estimate for 200 Hz.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_features import load_truth, score  # noqa: E402
from conftest import AUDIO  # noqa: E402

from ddsp_pd.audio_io import load_audio  # noqa: E402
from ddsp_pd.pitch import get_tracker  # noqa: E402
from ddsp_pd.stream.analysis import StreamAnalyzer  # noqa: E402
from ddsp_pd.stream.pitch import StreamingYin  # noqa: E402

SAMPLE_RATE = 16000
HOP = 64
FRAME_RATE = SAMPLE_RATE / HOP
THRESHOLDS = [0.2, 0.5, 0.7]


def live_track(
    audio: np.ndarray, lookahead: int | None, window: int, block: int = 256, threshold=0.15
):
    """f0 and confidence of the live analyser, fed ``block`` samples at a time."""
    tracker = StreamingYin(SAMPLE_RATE, window_length=window, threshold=threshold)
    analyzer = StreamAnalyzer(
        SAMPLE_RATE, HOP, "loudness_v3", tracker,
        f0_lookahead=None if lookahead is None or lookahead < 0 else lookahead,
    )  # fmt: skip
    f0s, confs = [], []
    for start in range(0, len(audio), block):
        frames = analyzer.push(audio[start : start + block])
        f0s.append(frames.f0_hz)
        confs.append(frames.f0_confidence)
    return np.concatenate(f0s), np.concatenate(confs)


def best_lag(f0: np.ndarray, truth: np.ndarray, max_lag: int = 6) -> int:
    """The shift (frames) of the track that maximises its raw pitch accuracy."""
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        shifted = np.roll(f0, -lag)
        scores[lag] = score(shifted, np.ones_like(f0), truth, [0.5])["rpa"]
    return max(scores, key=lambda k: (scores[k], -abs(k)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookahead", type=int, nargs="+", default=[-1])
    parser.add_argument("--window", type=int, default=640)
    args = parser.parse_args()
    clips = sorted(AUDIO.glob("*.wav"))
    if not clips:
        sys.exit(f"no clips in {AUDIO}")
    praat = get_tracker("praat")
    rows: dict[str, list[tuple[dict[str, float], int, int]]] = {}
    for wav in clips:
        audio = load_audio(wav, SAMPLE_RATE)
        truth = load_truth(wav)
        n_frames = len(audio) // HOP
        f0, conf = praat.track(audio, SAMPLE_RATE, FRAME_RATE, n_frames)
        n_voicing = int((truth[:, 4] > 0).sum())
        rows.setdefault("praat (offline)", []).append(
            (score(f0, conf, truth, THRESHOLDS), n_voicing, 0)
        )
        for lookahead in args.lookahead:
            f0, conf = live_track(audio, lookahead, args.window)
            f0, conf = f0[:n_frames], conf[:n_frames]
            lag = best_lag(f0, truth)
            rows.setdefault(f"yin-live L={lookahead}", []).append(
                (score(f0, conf, truth, THRESHOLDS), n_voicing, lag)
            )
    names = [w.stem for w in clips]
    for name, results in rows.items():
        print(f"\n== {name}")
        for clip, (result, _, lag) in zip(names, results, strict=True):
            print(f"  {clip:<22} rpa {result['rpa']:.3f} voicing@0.2 {result['vacc@0.2']:.3f}"
                  f" lag {lag:+d}")  # fmt: skip
        w_pitch = [r[0]["n_pitch"] for r in results]
        w_voice = [r[1] for r in results]
        rpa = np.average([r[0]["rpa"] for r in results], weights=w_pitch)
        print(f"  ALL rpa {rpa:.3f}")
        for th in THRESHOLDS:
            v = np.average([r[0][f"vacc@{th:g}"] for r in results], weights=w_voice)
            rec = np.average([r[0][f"recall@{th:g}"] for r in results], weights=w_voice)
            fa = np.average([r[0][f"false@{th:g}"] for r in results], weights=w_voice)
            print(f"    @{th:g}: voicing {v:.3f} recall {rec:.3f} false alarms {fa:.3f}")
        lags = [r[2] for r in results]
        print(f"  best lag per clip (frames of 4 ms): median {np.median(lags):+.1f}")
    # Cost per frame: 10 s of one clip through the analyser (f0 and loudness).
    audio = load_audio(AUDIO / "midi_flute.wav", SAMPLE_RATE)[: 10 * SAMPLE_RATE]
    for block in (64, 256, 1024):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            live_track(audio, args.lookahead[0], args.window, block)
            best = min(best, time.perf_counter() - start)
        frames = len(audio) // HOP
        print(f"analyser (yin + loudness), block {block}: {1e6 * best / frames:.1f} us per frame")


if __name__ == "__main__":
    main()
