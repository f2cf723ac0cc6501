"""The training loop of ``ddsp-pd train``: ddsp's solo-instrument recipe on our own model code.

What ddsp's ``Trainer`` does with ``solo_instrument.gin``: Adam (Keras defaults: beta 0.9 /
0.999, epsilon 1e-7) with learning rate ``3e-4 * 0.98 ** (step / 10000)``, gradients clipped
to a global norm of 3, loss = multi-scale spectral loss of the reverb output against the
example audio. The decoder sees ``f0_scaled = midi(f0) / 127`` and ``ld_scaled = ld / 80 + 1``;
the harmonic synthesiser runs at the tracked f0 (no confidence gate, as in ddsp).

``--config vst`` trains ddsp's ``models/vst/vst.gin`` instead (the DDSP-VST plugin's
architecture, what the Train_VST colab trains): centred 50 frames/s examples with power
(``pw_scaled``) and f0 inputs, a one-layer decoder, ``FilteredNoiseReverb`` (its IR made
from fresh noise every step, one IR for the batch, as ddsp does) and ``Crop``; the loss
compares the cropped output with the example's audio. Its checkpoint has vst.gin's
object graph and operative config, and ``ddsp-pd export`` turns it into a plugin model.

A run writes into its output folder: ``ckpt-N`` (model variables only, in ddsp's layout and
object graph so ddsp itself restores them, the newest few kept), ``train_state-N.npz``
beside each (Adam moments and step, to resume), ``operative_config-0.gin``,
``dataset_statistics.pkl``, ``train_features.npz`` (the cached examples) and
``train_log.csv`` (step, loss, elapsed seconds). Run again with the same folder to resume
from the newest checkpoint. Batches and noise depend only on
``(seed, step)``, so an interrupted and resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddsp_pd.config import ModelConfig, parameter_count
from ddsp_pd.errors import CheckpointError, InputError, OutputError
from ddsp_pd.model import DdspModel
from ddsp_pd.synth import white_noise
from ddsp_pd.training.dataset import Examples, prepare_examples
from ddsp_pd.training.graph import architecture_of
from ddsp_pd.training.losses import spectral_loss
from ddsp_pd.training.stats import compute_dataset_statistics
from ddsp_pd.training.writer import (
    TrainSettings,
    list_checkpoints,
    prune_checkpoints,
    read_save_counter,
    write_model_checkpoint,
    write_operative_config,
    write_statistics,
)

__all__ = [
    "PRESETS",
    "VST_PRESETS",
    "TrainOptions",
    "TrainResult",
    "learning_rate",
    "preset_config",
    "train",
]

LOG_NAME = "train_log.csv"
STATE_PATTERN = "train_state-{}.npz"

#: Model sizes by name. ``solo`` is ddsp's ``solo_instrument.gin``; ``small`` is the shipped
#: default model (trains on a laptop CPU); ``tiny`` is for tests. ``vst`` is ddsp's
#: ``models/vst/vst.gin``; ``vst-tiny`` (for tests) keeps what the DDSP-VST plugin needs
#: (60 harmonics, 65 noise bands, a GRU of 512) and shrinks the rest.
VST_PRESETS: dict[str, dict[str, object]] = {
    "vst": {},
    "vst-tiny": {
        "ch": 16,
        "reverb_length": 4000,
        "reverb_n_frames": 100,
        "reverb_n_filter_banks": 16,
    },
}
PRESETS: dict[str, dict[str, object]] = {
    "solo": {},
    "small": {
        "ch": 128,
        "rnn_channels": 192,
        "reverb_length": 16000,
    },
    "tiny": {
        "ch": 32,
        "rnn_channels": 32,
        "output_splits": (("amps", 1), ("harmonic_distribution", 20), ("noise_magnitudes", 17)),
        "reverb_length": 2000,
    },
}


def preset_config(name: str, example_secs: float = 4.0) -> ModelConfig:
    """The :class:`ModelConfig` of a preset, for examples of ``example_secs``."""
    if name in VST_PRESETS:
        base = ModelConfig.vst()
        # Centred examples: one frame more than hops, the synthesis cropped back to L.
        frames = round(base.frame_rate * example_secs) + 1
        return base.with_sizes(n_samples=frames * base.hop, **VST_PRESETS[name])
    if name not in PRESETS:
        names = ", ".join([*PRESETS, *VST_PRESETS])
        raise InputError(f"unknown model config {name!r}: use one of {names}")
    base = ModelConfig.solo_instrument()
    n_samples = round(base.sample_rate * example_secs)
    return base.with_sizes(n_samples=n_samples, time_steps=n_samples // base.hop, **PRESETS[name])


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Keras ``ExponentialDecay`` (not staircase): ``lr * rate ** (step / decay_steps)``."""
    return settings.learning_rate * settings.lr_decay_rate ** (step / settings.lr_decay_steps)


class _Adam:
    """Adam as Keras implements it (bias correction folded into the step size)."""

    def __init__(
        self,
        variables: Mapping[str, tf.Variable],
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        self.names = list(variables)
        self.variables = [variables[name] for name in self.names]
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        step = lr * tf.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v, strict=True):
            m.assign_add((g - m) * (1.0 - self.beta_1))
            v.assign_add((tf.square(g) - v) * (1.0 - self.beta_2))
            var.assign_sub(step * m / (tf.sqrt(v) + self.epsilon))

    @staticmethod
    def _key(kind: str, name: str) -> str:
        # npz member names become file names inside a zip: no slashes.
        return f"{kind}:{name.replace('/', '|')}"

    def state(self) -> dict[str, np.ndarray]:
        """Moments by variable name, and the step count."""
        out = {"iterations": np.asarray(self.iterations.numpy())}
        for name, m, v in zip(self.names, self.m, self.v, strict=True):
            out[self._key("m", name)] = m.numpy()
            out[self._key("v", name)] = v.numpy()
        return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Load :meth:`state` output; a missing or misshapen moment is a CheckpointError."""
        try:
            self.iterations.assign(int(state["iterations"]))
            for name, m, v in zip(self.names, self.m, self.v, strict=True):
                m.assign(state[self._key("m", name)])
                v.assign(state[self._key("v", name)])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"training state does not fit the model ({exc})") from exc


@dataclass(frozen=True)
class TrainOptions:
    """How long and how to train."""

    steps: int = 3000
    batch_size: int = 8
    seed: int = 0
    config: str = "small"
    save_every: int = 300
    keep: int = 3
    log_every: int = 10
    tracker: str = "praat"
    example_secs: float = 4.0
    hop_secs: float = 1.0
    settings: TrainSettings = field(default_factory=TrainSettings)


@dataclass
class TrainResult:
    """What a run did."""

    output_dir: Path
    config: ModelConfig
    start_step: int
    final_step: int
    n_examples: int
    parameter_count: int
    losses: list[tuple[int, float]]
    seconds: float
    model: DdspModel


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The examples of one step: a function of (seed, step) only, so resuming is exact."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=batch_size, replace=n < batch_size)


def _noise_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**31 - 1)


# Keeps the IR noise's stream apart from the signal noise's of the same step.
_IR_SEED_OFFSET = 7_777_777


def _read_log(path: Path, up_to: int) -> list[tuple[int, float, float]]:
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            if step <= up_to:
                rows.append((step, float(row["loss"]), float(row["seconds"])))
    return rows


def _write_log(path: Path, rows: list[tuple[int, float, float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "seconds"])
        writer.writerows((s, f"{loss:.6f}", f"{sec:.2f}") for s, loss, sec in rows)
    tmp.replace(path)


def _restore(
    out: Path, config: ModelConfig, seed: int, say: Callable[[str], None]
) -> tuple[int, DdspModel, dict[str, np.ndarray] | None]:
    """The newest checkpoint in ``out`` with its optimizer state, or a fresh model."""
    from ddsp_pd.checkpoint import load_checkpoint

    steps = list_checkpoints(out)
    if not steps:
        return 0, DdspModel(config, seed=seed), None
    step = steps[-1]
    ckpt = load_checkpoint(out)

    def sizes(c: ModelConfig) -> tuple[object, ...]:
        return (c.era, c.ch, c.rnn_channels, c.n_outputs, c.reverb_length, c.reverb_n_frames,
                c.reverb_n_filter_banks)  # fmt: skip

    mine, theirs = sizes(config), sizes(ckpt.config)
    if mine != theirs:
        raise CheckpointError(
            f"{out} holds a model of other sizes ({ckpt.config.era}, ch {ckpt.config.ch}, "
            f"rnn {ckpt.config.rnn_channels}); use a new output folder or the same --config"
        )
    state_path = out / STATE_PATTERN.format(step)
    state = None
    if state_path.is_file():
        with np.load(state_path) as data:
            state = {k: data[k] for k in data.files}
    else:
        say(f"no optimizer state for ckpt-{step}: Adam restarts from zero moments")
    return step, DdspModel(config, ckpt.variables), state


def train(
    audio_dir: str | Path,
    output_dir: str | Path,
    options: TrainOptions,
    say: Callable[[str], None] = print,
    examples: Examples | None = None,
) -> TrainResult:
    """Train (or resume training) a model on the audio in ``audio_dir``; see the module doc."""
    out = Path(output_dir).expanduser()
    if options.steps < 1 or options.batch_size < 1:
        raise InputError("--steps and --batch-size must be at least 1")
    config = preset_config(options.config, options.example_secs)
    settings = replace(
        options.settings,
        batch_size=options.batch_size,
        num_steps=options.steps,
        steps_per_save=options.save_every,
        checkpoints_to_keep=options.keep,
        example_secs=options.example_secs,
    )
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder: give a checkpoint folder with -o")
    power = config.level == "power"
    if examples is None:
        examples = prepare_examples(
            audio_dir,
            out,
            config.sample_rate,
            config.hop,
            options.example_secs,
            options.hop_secs,
            options.tracker,
            progress=say,
            level=config.level,
            power_frame_size=config.power_frame_size or 1024,
        )
    if power and examples.power_db is None:
        raise InputError("a DDSP-VST model trains on power examples (level 'power')")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror}") from exc
    stats = compute_dataset_statistics(
        examples.audio,
        examples.f0_hz,
        examples.f0_confidence,
        examples.loudness_db,
        config.hop,
        power_frame_size=config.power_frame_size or 1024,
    )
    write_operative_config(out, config, settings)
    write_statistics(
        out, stats.values, stats.quantile_transform.quantiles, stats.quantile_transform.references
    )

    architecture = architecture_of(config)
    start, model, state = _restore(out, config, options.seed, say)
    # ddsp's CheckpointManager counts the saves of a run across resumes; so does this.
    saves = read_save_counter(out / f"ckpt-{start}") if start else 0
    optimizer = _Adam(model.ddsp_variables())
    variables = optimizer.variables
    if state is not None:
        optimizer.restore(state)
    n_params = parameter_count({n: v.shape for n, v in model.ddsp_variables().items()})
    reverb = "noise reverb " if config.reverb_type == "filtered_noise" else "reverb "
    say(
        f"model: {options.config} (ch {config.ch}, rnn {config.rnn_channels}, "
        f"{config.n_harmonics} harmonics, {config.n_noise_bands} noise bands, {reverb}"
        f"{config.reverb_length}), {n_params:,} parameters; {len(examples)} examples of "
        f"{options.example_secs:g} s"
    )
    if start >= options.steps:
        say(f"already trained to step {start} (>= --steps {options.steps}); nothing to do")
        return TrainResult(out, config, start, start, len(examples), n_params, [], 0.0, model)
    if start:
        say(f"resuming from step {start}")

    frames = examples.f0_hz.shape[1]
    n_samples = examples.audio.shape[1]
    n_synth = frames * config.hop  # centred (power) examples: n_samples + hop
    ir_length = max(config.reverb_length, 1) if config.reverb_type == "filtered_noise" else 1
    spec_f = tf.TensorSpec([None, frames], tf.float32)
    spec_a = tf.TensorSpec([None, n_samples], tf.float32)
    spec_n = tf.TensorSpec([None, n_synth], tf.float32)
    spec_ir = tf.TensorSpec([ir_length], tf.float32)
    level_key = "power_db" if power else "loudness_db"

    @tf.function(
        input_signature=[spec_f, spec_f, spec_a, spec_n, spec_ir, tf.TensorSpec([], tf.float32)],
        reduce_retracing=True,
    )
    def train_step(f0, level, audio, noise, ir_noise, lr):
        with tf.GradientTape() as tape:
            output = model(f0, level, noise, ir_noise if model.reverb_magnitudes is not None
                           else None)["audio"]  # fmt: skip
            loss = spectral_loss(audio, output, settings.fft_sizes)
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, settings.grad_clip_norm)
        optimizer.apply(grads, lr)
        return loss

    log_path = out / LOG_NAME
    log_rows = _read_log(log_path, start)
    elapsed_before = log_rows[-1][2] if log_rows else 0.0
    losses: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    window: list[float] = []
    window_t = t0
    step = start

    def save(step: int) -> None:
        nonlocal saves
        saves += 1
        write_model_checkpoint(out, model.ddsp_variables(), step, architecture, saves)
        np.savez(out / STATE_PATTERN.format(step), **optimizer.state())
        prune_checkpoints(out, options.keep, also=(STATE_PATTERN,))
        _write_log(log_path, log_rows)

    try:
        while step < options.steps:
            idx = _batch_indices(len(examples), options.batch_size, options.seed, step)
            batch = examples.batch(idx)
            noise_seed = _noise_seed(options.seed, step)
            noise = white_noise(len(idx), n_synth, noise_seed)
            # ddsp draws the reverb's IR noise afresh every step: one IR for the batch.
            ir_noise = white_noise(1, ir_length, noise_seed + _IR_SEED_OFFSET)[0]
            lr = tf.constant(learning_rate(step, settings), tf.float32)
            loss = float(
                train_step(batch["f0_hz"], batch[level_key], batch["audio"], noise, ir_noise, lr)
            )
            if not math.isfinite(loss):
                raise InputError(f"training diverged at step {step + 1} (loss {loss})")
            step += 1
            losses.append((step, loss))
            now = time.perf_counter()
            log_rows.append((step, loss, elapsed_before + now - t0))
            window.append(loss)
            if step % options.log_every == 0 or step == options.steps:
                rate = len(window) / max(now - window_t, 1e-9)
                eta = (options.steps - step) / rate
                say(
                    f"step {step}/{options.steps}  loss {np.mean(window):.4f}  "
                    f"{rate:.2f} steps/s  ETA {_hms(eta)}"
                )
                window, window_t = [], now
            if step % options.save_every == 0 and step < options.steps:
                save(step)
    except KeyboardInterrupt:
        if step > start:
            save(step)
            say(f"interrupted: saved step {step} in {out}; run again to resume")
        raise
    save(step)
    seconds = time.perf_counter() - t0
    say(f"done: step {step}, final loss {losses[-1][1]:.4f}, {_hms(seconds)}; wrote {out}")
    return TrainResult(out, config, start, step, len(examples), n_params, losses, seconds, model)


def _hms(seconds: float) -> str:
    total = max(0, round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
