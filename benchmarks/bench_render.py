"""End-to-end speed of a render through ``transfer.Engine`` for a 10 s input.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_render.py [--input WAV] [--checkpoint DIR] [--repeats 5]

Stages: checkpoint load, feature extraction (f0 and loudness separately), decoder, synthesis,
the first render of a new file (features included) and a warm re-render with cached features
after a control change. Targets from the engine issue (2 cores): warm re-render <= 150 ms,
first render with features <= 1.5 s, checkpoint load <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
DEFAULT_CKPT = SHARED / "fixtures/reference/solo_ddsp37/checkpoint"
DEFAULT_INPUT = SHARED / "fixtures/audio/midi_flute.wav"


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _median(fn, repeats: int) -> float:
    return statistics.median(_timed(fn)[1] for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    (_, t_import) = _timed(lambda: __import__("ddsp_pd.transfer"))
    import numpy as np
    import soundfile as sf

    from ddsp_pd.audio_io import load_audio
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.loudness import compute_loudness
    from ddsp_pd.pitch import get_tracker
    from ddsp_pd.transfer import Engine, RenderSettings

    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    print(f"import (TensorFlow included), once per process: {t_import:.2f} s")

    engine = Engine()
    loaded, t_load = _timed(lambda: engine.load_model(args.checkpoint))
    config = loaded.model.config
    print(f"checkpoint load + model build: {t_load * 1e3:.0f} ms")

    # A 10 s input at the file's own rate, written to a temp file so the cache starts cold.
    audio, rate = sf.read(str(args.input), dtype="float32", always_2d=True)
    n = int(args.seconds * rate)
    clip = np.resize(audio.mean(axis=1), n)
    tmp = Path(tempfile.mkdtemp(prefix="ddsp-pd-bench-"))
    try:
        model_audio = load_audio(args.input, config.sample_rate)
        model_audio = np.resize(model_audio, int(args.seconds * config.sample_rate))
        tracker = get_tracker("default")
        n_frames = len(model_audio) // config.hop
        tracker.track(model_audio, config.sample_rate, config.frame_rate, n_frames)  # warm-up
        t_f0 = _median(
            lambda: tracker.track(model_audio, config.sample_rate, config.frame_rate, n_frames),
            args.repeats,
        )
        t_ld = _median(
            lambda: compute_loudness(
                model_audio, config.sample_rate, config.hop, config.loudness_version
            ),
            args.repeats,
        )
        print(f"f0 ({tracker.name}), 10 s: {t_f0 * 1e3:.0f} ms")
        print(f"loudness {config.loudness_version}, 10 s: {t_ld * 1e3:.0f} ms")

        settings = RenderSettings(controls=ControlSettings())
        first = tmp / "first.wav"
        sf.write(str(first), clip, rate)
        # Trace the model's graphs once so 'first render' means a new file, not a new process.
        warm = tmp / "warm.wav"
        sf.write(str(warm), clip[::-1].copy(), rate)
        _, t_trace = _timed(lambda: engine.render(loaded, settings, input_path=warm))
        print(f"very first render in the process (graph tracing): {t_trace:.2f} s")

        features, _ = engine.features_for(warm, loaded)
        adjusted = engine.adjust(features, loaded, settings)
        t_model = _median(
            lambda: loaded.model.render(adjusted.f0_hz, adjusted.loudness_db, seed=0),
            args.repeats,
        )
        print(f"model (decoder + synthesis), 10 s: {t_model * 1e3:.0f} ms")

        _, t_first = _timed(lambda: engine.render(loaded, settings, input_path=first))
        print(f"first render of a new 10 s file (features included): {t_first * 1e3:.0f} ms")

        times = []
        for i in range(args.repeats):
            changed = RenderSettings(controls=ControlSettings(octave=float(i % 2)))
            times.append(_timed(lambda s=changed: engine.render(loaded, s, input_path=first))[1])
        print(
            f"warm re-render, cached features, control change: "
            f"{statistics.median(times) * 1e3:.0f} ms (median of {args.repeats})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
