"""End-to-end speed of a render through ``transfer.Engine`` for a 10 s input.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_render.py [--input WAV] [--checkpoint DIR] [--repeats 5]
                                      [--kernels auto|numpy|compiled]

The engine is set up as the server sets it up (``warm_up``: compiled kernels, loaded at
model load); ``--kernels numpy`` shows what a one-shot ``ddsp-pd render`` of a short clip
uses. Stages: checkpoint load, feature extraction (f0 and loudness separately), the model,
the first render of a new file (features included), a warm re-render with cached features
after a control change (a new loudness shift each time, so the decoder runs), and
re-renders after a change of seed or of output rate/normalisation only (the decoder's
output is cached). Goals (issue 10, 2 cores): warm re-render of 10 s <= 150 ms with the
solo-size model, <= 60 ms with the shipped default. Figures are minimum and median of
``--repeats`` runs (the machine may be shared: the minimum is the better cost estimate).
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


def _report(label: str, times: list[float]) -> None:
    print(
        f"{label}: min {min(times) * 1e3:.0f} ms, median {statistics.median(times) * 1e3:.0f} ms "
        f"(n={len(times)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", default="auto", choices=["auto", "numpy", "compiled"])
    parser.add_argument("--precision", default="exact", choices=["exact", "fast"])
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
    import sys

    tf = "tensorflow" in sys.modules
    print(f"import ddsp_pd.transfer, once per process: {t_import:.2f} s (TensorFlow: {tf})")

    engine = Engine(warm_up=True, kernels=args.kernels, precision=args.precision)
    loaded, t_load = _timed(lambda: engine.load_model(args.checkpoint))
    config = loaded.model.config
    print(
        f"checkpoint load + model build + warm-up: {t_load * 1e3:.0f} ms "
        f"(kernels: {engine.kernels_for(0)}, precision: {args.precision})"
    )

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
        warm = tmp / "warm.wav"
        sf.write(str(warm), clip[::-1].copy(), rate)
        _, t_trace = _timed(lambda: engine.render(loaded, settings, input_path=warm))
        print(f"very first render in the process: {t_trace * 1e3:.0f} ms")

        features, _ = engine.features_for(warm, loaded)
        adjusted = engine.adjust(features, loaded, settings)
        backend = engine.kernels_for(len(adjusted.f0_hz))
        t_model = [
            _timed(
                lambda: loaded.model.render(
                    adjusted.f0_hz, adjusted.loudness_db, seed=0, kernels=backend
                )
            )[1]
            for _ in range(args.repeats)
        ]
        _report(f"model (decoder + synthesis), {args.seconds:g} s", t_model)

        _, t_first = _timed(lambda: engine.render(loaded, settings, input_path=first))
        print(f"first render of a new 10 s file (features included): {t_first * 1e3:.0f} ms")

        times = []
        for i in range(args.repeats):
            # A loudness shift never used before: the decoder's input is new every time.
            changed = RenderSettings(controls=ControlSettings(loudness_db=-0.5 * (i + 1)))
            times.append(_timed(lambda s=changed: engine.render(loaded, s, input_path=first))[1])
        _report("warm re-render, cached features, control change (decoder runs)", times)
        octaves = []
        for i in range(args.repeats):
            # An octave never used before: f0 is new, the loudness stack comes from the cache.
            changed = RenderSettings(controls=ControlSettings(octave=0.01 * (i + 1)))
            octaves.append(_timed(lambda s=changed: engine.render(loaded, s, input_path=first))[1])
        _report("warm re-render after an octave change (decoder runs)", octaves)

        reseeded = []
        for i in range(args.repeats):
            changed = RenderSettings(controls=ControlSettings(), seed=i + 1)
            reseeded.append(_timed(lambda s=changed: engine.render(loaded, s, input_path=first))[1])
        _report("re-render after a seed change only (decoder output cached)", reseeded)
        other = []
        for i in range(args.repeats):
            changed = RenderSettings(
                controls=ControlSettings(), normalize=bool(i % 2), sample_rate=44100
            )
            other.append(_timed(lambda s=changed: engine.render(loaded, s, input_path=first))[1])
        _report("re-render after an output rate / normalisation change", other)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
