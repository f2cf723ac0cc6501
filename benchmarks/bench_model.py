"""Speed of the model: checkpoint load, decoder and synthesis for 10 s of audio.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_model.py [--checkpoint DIR] [--seconds 10] [--repeats 7]
                                     [--tensorflow]

Measures the numpy inference path (``ddsp_pd.inference``, what renders use) with each
kernel backend, stage by stage, and where the decoder's time goes (the model's stack
cache emptied before each timed call, except in the "loudness changed" row, where f0's
stack comes from it as in a re-render after a loudness change), then the same with
``precision="fast"``; with ``--tensorflow``
also the TensorFlow model kept for training, in the same run. Figures are the minimum and
the median of ``--repeats`` runs: on a shared machine the minimum is the better estimate
of the cost, the median shows the noise. Goals (issue 10, 2 cores): warm decoder +
synthesis of 10 s well under the warm re-render goals (150 ms solo-size, 60 ms default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = (
    Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
    / "fixtures/reference/solo_ddsp37/checkpoint"
)


def _times(fn, repeats: int, setup=None) -> tuple[float, float]:
    """(minimum, median) seconds of ``repeats`` calls (``setup`` runs untimed before each)."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def _fmt(label: str, t: tuple[float, float]) -> str:
    return f"  {label:<46} min {t[0] * 1e3:7.1f} ms   median {t[1] * 1e3:7.1f} ms"


def _clip(config, seconds: float):
    import numpy as np

    n_frames = round(seconds * config.frame_rate)
    rng = np.random.default_rng(0)
    t = np.arange(n_frames) / config.frame_rate
    f0 = (220.0 * 2 ** (np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)
    loudness = -40.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t) + rng.normal(0, 1, n_frames)
    return f0, loudness.astype(np.float32)


def _decoder_parts(model, f0s, lds, backend: str, repeats: int) -> None:
    import numpy as np

    from ddsp_pd.inference import decoder as dec
    from ddsp_pd.inference import kernels

    w = model.weights
    scaled = {"f0_scaled": f0s[0], "ld_scaled": lds[0]}
    inputs = [scaled[k] for k in model.config.input_keys]
    units = model.config.rnn_channels

    def stacks():
        pairs = zip(inputs, w.stacks, strict=True)
        parts = [dec.fc_stack(x, layers, backend) for x, layers in pairs]
        x = np.concatenate(parts, axis=1)
        fused = x @ w.fused_kernel
        fused += w.fused_bias
        return fused

    fused = stacks()
    out = np.empty((fused.shape[0], units), np.float32)
    h0 = np.zeros(units, np.float32)

    def gru():
        kernels.gru_recurrence(
            fused, w.recurrent_kernel, w.recurrent_bias, h0, out, backend, w.recurrent_kernel_t
        )

    def head():
        y = fused[:, 3 * units :] + out @ w.out_first_rnn
        kernels.layer_norm_leaky(y, w.out_first.gamma, w.out_first.beta, 1e-3, 0.2, backend)
        y = dec.fc_stack(y, w.out_rest, backend)
        return y @ w.dense_kernel + w.dense_bias

    print(_fmt("decoder: input stacks + fused products", _times(stacks, repeats)))
    print(_fmt("decoder: GRU recurrence", _times(gru, repeats)))
    print(_fmt("decoder: output stack", _times(head, repeats)))


def _bench_backend(
    checkpoint, backend: str, f0, loudness, seconds: float, repeats: int, precision: str = "exact"
) -> None:
    from ddsp_pd.inference import InferenceModel
    from ddsp_pd.inference import synth as isynth

    config = checkpoint.config
    model = InferenceModel(checkpoint, kernels=backend, precision=precision)
    cold = model.stack_cache.clear  # each timed decode computes both stacks
    if precision != "exact":
        print(f"[{backend}, precision={precision}]")
    start = time.perf_counter()
    model.render(f0, loudness)
    print(f"[{backend}] first render in this process: {(time.perf_counter() - start) * 1e3:.0f} ms")
    f0s, lds = model.preprocess(f0[None], loudness[None])
    raw = model.decode(f0s, lds)
    controls = model.controls(raw, f0[None])
    harmonic = model.harmonic(controls, f0[None])
    n_samples = len(f0) * config.hop
    white = isynth.white_noise(1, n_samples, 0)
    filtered, _ = isynth.filtered_noise(controls["noise_magnitudes"], white, config.hop)
    dry = harmonic + filtered
    mags = controls["noise_magnitudes"]
    shifts = iter(range(1, 10**6))

    def loudness_change():
        return model.decode(f0s, lds - 0.001 * next(shifts))

    model.decode(f0s, lds)
    print(_fmt("decoder, loudness changed (f0 stack cached)", _times(loudness_change, repeats)))
    if precision != "exact":
        render = _times(lambda: model.render(f0, loudness, seed=0), repeats, cold)
        print(_fmt("render end to end (model only, cold cache)", render))
        return
    stages = [
        ("decoder", lambda: model.decode(f0s, lds)),
        ("controls (exp_sigmoid, Nyquist)", lambda: model.controls(raw, f0[None])),
        ("harmonic oscillators", lambda: model.harmonic(controls, f0[None])),
        ("white noise", lambda: isynth.white_noise(1, n_samples, 0)),
        ("filtered noise", lambda: isynth.filtered_noise(mags, white, config.hop)),
    ]
    if model.reverb_ir is not None:
        stages.append(("reverb", lambda: isynth.reverb(dry, model.reverb_ir)))
    for label, fn in stages:
        print(_fmt(label, _times(fn, repeats, cold)))
        if label == "decoder":
            _decoder_parts(model, f0s, lds, backend, repeats)
    render = _times(lambda: model.render(f0, loudness, seed=0), repeats, cold)
    print(_fmt("render end to end (model only, cold cache)", render))
    print(f"  = {seconds / render[0]:.0f}x real time at the minimum")
    ddsp = InferenceModel(checkpoint, kernels=backend, phase_mode="ddsp")
    ddsp.render(f0, loudness)
    ddsp_time = _times(lambda: ddsp.render(f0, loudness), repeats, ddsp.stack_cache.clear)
    print(_fmt("render, phase_mode='ddsp'", ddsp_time))
    flops = 2 * len(f0) * model.weights.parameter_count
    print(f"  decoder arithmetic: {flops / 1e9:.1f} GFLOP per {seconds:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tensorflow", action="store_true", help="also time the TF model")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.inference import InferenceModel, kernels

    print(f"import numpy + ddsp_pd.inference: {time.perf_counter() - t0:.2f} s (no TensorFlow)")
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")

    load = _times(lambda: load_checkpoint(args.checkpoint), 3)
    checkpoint = load_checkpoint(args.checkpoint)
    print(
        f"load_checkpoint: min {load[0] * 1e3:.0f} ms ({checkpoint.name}, "
        f"{checkpoint.parameter_count:,} parameters)"
    )
    start = time.perf_counter()
    InferenceModel(checkpoint)
    print(f"InferenceModel construction: {(time.perf_counter() - start) * 1e3:.0f} ms")
    config = checkpoint.config
    f0, loudness = _clip(config, args.seconds)
    print(
        f"clip: {args.seconds:g} s = {len(f0)} frames = {len(f0) * config.hop} samples at "
        f"{config.sample_rate} Hz"
    )
    backends = ["numpy"] + (["compiled"] if kernels.compiled_available() else [])
    for backend in backends:
        _bench_backend(checkpoint, backend, f0, loudness, args.seconds, args.repeats)
    _bench_backend(checkpoint, backends[-1], f0, loudness, args.seconds, args.repeats, "fast")

    if args.tensorflow:
        from ddsp_pd.model import DdspModel

        tf_model = DdspModel(checkpoint)
        tf_model.render(f0, loudness)
        tf_time = _times(lambda: tf_model.render(f0, loudness, seed=0), args.repeats)
        print(_fmt("[tensorflow] render end to end (training model)", tf_time))
    return 0


if __name__ == "__main__":
    sys.exit(main())
