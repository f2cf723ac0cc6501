"""Speed of the model engine: checkpoint load, decoder and synthesis for 10 s of audio.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_model.py [--seconds 10] [--repeats 5] [--checkpoint DIR]

Targets from the issue: load <= 1 s; warm decoder + synthesis of 10 s well under
150 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = (
    Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
    / "fixtures/reference/solo_ddsp37/checkpoint"
)


def _median_time(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.model import DdspModel

    t_import = time.perf_counter() - t0
    print(f"import numpy + tensorflow + ddsp_pd: {t_import:.2f} s (once per process)")
    print(
        f"threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, "
        f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work skews figures)"
    )

    load_times = []
    for _ in range(3):
        start = time.perf_counter()
        checkpoint = load_checkpoint(args.checkpoint)
        load_times.append(time.perf_counter() - start)
    print(
        f"load_checkpoint: median {statistics.median(load_times) * 1e3:.0f} ms "
        f"({checkpoint.name}, {checkpoint.parameter_count:,} parameters)"
    )

    start = time.perf_counter()
    model = DdspModel(checkpoint)
    print(f"DdspModel construction: {(time.perf_counter() - start) * 1e3:.0f} ms")

    config = model.config
    n_frames = round(args.seconds * config.frame_rate)
    rng = np.random.default_rng(0)
    t = np.arange(n_frames) / config.frame_rate
    f0 = (220.0 * 2 ** (np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)
    loudness = (-40.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t) + rng.normal(0, 1, n_frames)).astype(
        np.float32
    )
    print(
        f"clip: {args.seconds:g} s = {n_frames} frames = {n_frames * config.hop} samples "
        f"at {config.sample_rate} Hz"
    )

    start = time.perf_counter()
    model.render(f0, loudness)
    print(f"first render (traces graphs): {(time.perf_counter() - start) * 1e3:.0f} ms")

    f0_scaled, ld_scaled = model.preprocess(f0[None], loudness[None])
    raw = model.decode(f0_scaled, ld_scaled)
    controls = model.controls(raw, f0[None])

    def decode() -> None:
        out = model.decode(f0_scaled, ld_scaled)
        out["amps"].numpy()

    def synthesize() -> None:
        model.synthesize(controls, f0[None], seed=0)["reverb_signal"].numpy()

    def render() -> None:
        model.render(f0, loudness, seed=0)

    med, best = _median_time(decode, args.repeats)
    print(f"decoder (warm): median {med * 1e3:.0f} ms, best {best * 1e3:.0f} ms")
    med_s, best_s = _median_time(synthesize, args.repeats)
    print(
        f"synthesis (warm, harmonic+noise+reverb): median {med_s * 1e3:.0f} ms, "
        f"best {best_s * 1e3:.0f} ms"
    )
    med_r, best_r = _median_time(render, args.repeats)
    print(
        f"render end to end (warm): median {med_r * 1e3:.0f} ms, best {best_r * 1e3:.0f} ms "
        f"= {args.seconds / med_r:.0f}x real time"
    )

    ddsp_model = DdspModel(checkpoint, phase_mode="ddsp")
    ddsp_model.render(f0, loudness)
    med_d, _ = _median_time(lambda: ddsp_model.render(f0, loudness), args.repeats)
    print(f"render with phase_mode='ddsp' (warm): median {med_d * 1e3:.0f} ms")

    # Where the decoder's time goes: the feed-forward graph vs the recurrence.
    dec = model.decoder
    args_in = [dict(f0_scaled=f0_scaled, ld_scaled=ld_scaled)[k] for k in config.input_keys]
    stacks, x_proj = dec._stage_a(*args_in)
    x_np = x_proj.numpy()
    med_a, _ = _median_time(lambda: dec._stage_a(*args_in)[1].numpy(), args.repeats)
    med_g, _ = _median_time(lambda: dec._gru_numpy(x_np), args.repeats)
    rnn = tf.convert_to_tensor(dec._gru_numpy(x_np))
    med_b, _ = _median_time(lambda: dec._stage_b(stacks, rnn)["amps"].numpy(), args.repeats)
    print(
        f"  decoder parts: input stacks + GRU input projection {med_a * 1e3:.0f} ms, "
        f"GRU recurrence {med_g * 1e3:.0f} ms (numpy loop), "
        f"output stack {med_b * 1e3:.0f} ms"
    )
    flops = 2 * n_frames * sum(int(np.prod(v.shape)) for v in dec.ddsp_variables().values())
    print(f"  decoder arithmetic: {flops / 1e9:.1f} GFLOP -> {flops / med / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
