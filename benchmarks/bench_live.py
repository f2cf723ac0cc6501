"""``ddsp-pd live`` figures for docs/performance.md ("Live"): per model kind, at 48 kHz with
blocks of 64, 256 and 1024 samples, through the live path in ``--file`` mode (the runner's
worker thread and queue, the engine):

- real-time factor (worker time per second of audio; 2 cores shared with everything else);
- algorithmic latency: block slack + analysis lookahead + frame + noise filter + resampling;
- measured input-to-output latency: an impulse train in, cross-correlated with what comes
  out (the lag of the peak), and the mean onset lag of the model's answer to each impulse;
- optionally (``--realtime-minutes M``) the dropouts of an M-minute ``--realtime`` run.

    python benchmarks/bench_live.py [--seconds 20] [--blocks 64 256 1024] [--kinds ...]
    python benchmarks/bench_live.py --realtime-minutes 10 --kinds default --blocks 256 [--buffer 4]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import AUDIO, REFERENCE_CHECKPOINT, VST_REFERENCE  # noqa: E402

from ddsp_pd.audio_io import load_audio  # noqa: E402
from ddsp_pd.stream.engine import EngineSettings, StreamEngine  # noqa: E402
from ddsp_pd.stream.models import open_live_model  # noqa: E402
from ddsp_pd.stream.runner import run_file  # noqa: E402

RATE = 48000
#: kind -> (model, frames per step (0: the auto step), decoder precision).
KINDS = {
    "default": (ROOT / "checkpoints" / "default", 0, "exact"),
    "default-k1": (ROOT / "checkpoints" / "default", 1, "exact"),
    "default-k2": (ROOT / "checkpoints" / "default", 2, "exact"),
    "default-fast": (ROOT / "checkpoints" / "default", 0, "fast"),
    "default-fast-k1": (ROOT / "checkpoints" / "default", 1, "fast"),
    "solo": (REFERENCE_CHECKPOINT, 0, "exact"),
    "solo-fast": (REFERENCE_CHECKPOINT, 0, "fast"),
    "solo-fast-k4": (REFERENCE_CHECKPOINT, 4, "fast"),
    "solo-k2": (REFERENCE_CHECKPOINT, 2, "exact"),
    "solo-k3": (REFERENCE_CHECKPOINT, 3, "exact"),
    "solo-k4": (REFERENCE_CHECKPOINT, 4, "exact"),
    "solo-k8": (REFERENCE_CHECKPOINT, 8, "exact"),
    "vst": (VST_REFERENCE / "checkpoint", 0, "exact"),
    "tflite": (VST_REFERENCE / "export" / "tflite" / "clarinet.tflite", 0, "exact"),
}


def music(seconds: float) -> np.ndarray:
    """A fixture melody (or the shipped example) at 48 kHz, looped to ``seconds``."""
    path = AUDIO / "midi_flute.wav"
    if not path.exists():
        path = ROOT / "examples" / "melody.wav"
    x = load_audio(path, RATE)
    reps = int(np.ceil(seconds * RATE / x.size))
    return np.tile(x, reps)[: int(seconds * RATE)]


def impulse_train(seconds: float, period: float = 0.5) -> np.ndarray:
    x = np.zeros(int(seconds * RATE), np.float32)
    x[int(0.25 * RATE) :: int(period * RATE)] = 0.9
    return x


def measured_latency(
    engine: StreamEngine, block: int, buffer: int | None = None, period: float = 0.5
) -> tuple[float, float]:
    """(cross-correlation peak lag, mean onset lag) in ms of an impulse train's answer."""
    x = impulse_train(6.0, period)
    run = run_file(engine, x, block, buffer)
    y = np.abs(run.audio[: x.size])
    max_lag = int(0.2 * RATE)
    # Cross-correlate the impulses with the output's magnitude over lags 0..200 ms.
    spikes = np.flatnonzero(x)
    lags = np.arange(max_lag)
    score = np.array([y[np.minimum(spikes + lag, y.size - 1)].sum() for lag in lags])
    peak = int(np.argmax(score))
    onsets = []
    for s in spikes[1:-1]:  # the first impulse also meets the start-up
        seg = y[s : s + int(period * RATE * 0.8)]
        if seg.max() <= 0:
            continue
        onsets.append(int(np.argmax(seg >= 0.1 * seg.max())))
    to_ms = 1000.0 / RATE
    return peak * to_ms, float(np.mean(onsets)) * to_ms if onsets else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--realtime-minutes", type=float, default=0.0)
    parser.add_argument("--buffer", type=int, default=0,
                        help="blocks of runner slack (0: the default, 10 ms worth)")  # fmt: skip
    parser.add_argument("--max-buffer", type=int, default=0,
                        help="the realtime run's slack may grow to this many blocks at "
                        "dropouts (0: fixed)")  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    audio = music(args.seconds)
    print("kind | block | RTF (min of runs) | algorithmic latency ms (parts) | measured: "
          "xcorr peak / onset ms | dropouts")  # fmt: skip
    for kind in args.kinds:
        path, frames, precision = KINDS[kind]
        if not Path(path).exists():
            print(f"{kind}: {path} missing, skipped")
            continue
        model = open_live_model(path, precision=precision)
        for block in args.blocks:
            buffer = args.buffer or None
            settings = EngineSettings(frames_per_step=frames)
            rtfs = []
            dropouts = 0
            for _ in range(args.repeats):
                engine = StreamEngine(model, RATE, settings)
                engine.warm_up()
                run = run_file(engine, audio, block, buffer)
                rtfs.append(run.realtime_factor)
                dropouts += run.dropouts
            engine = StreamEngine(model, RATE, settings)
            engine.warm_up()
            peak, onset = measured_latency(engine, block, buffer)
            parts = engine.describe_latency()
            slack_ms = 1000.0 * (run.latency_samples - engine.latency_samples) / RATE
            detail = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in parts.items() if k != "total_ms")
            print(
                f"{kind} | {block} | {min(rtfs):.3f} (median {np.median(rtfs):.3f}) | "
                f"{run.latency_ms:.1f} (slack {slack_ms:.1f}, engine {parts['total_ms']:.1f}: "
                f"{detail}) | {peak:.1f} / {onset:.1f} | {dropouts}",
                flush=True,
            )
            if args.realtime_minutes > 0:
                long = music(args.realtime_minutes * 60.0)
                engine = StreamEngine(model, RATE, settings)
                engine.warm_up()
                started = time.perf_counter()
                run = run_file(engine, long, block, buffer, realtime=True,
                               max_buffer_blocks=args.max_buffer or None)  # fmt: skip
                print(
                    f"  realtime {args.realtime_minutes:g} min: wall "
                    f"{time.perf_counter() - started:.1f} s, dropouts {run.dropouts} "
                    f"({run.burst_dropouts} in bursts of late callbacks), overruns "
                    f"{run.overruns}, errors {run.errors}, RTF {run.realtime_factor:.3f}, "
                    f"latency {run.latency_ms:.1f} ms"
                    + (f" (slack grew by {run.grown_blocks} blocks)" if args.max_buffer else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
