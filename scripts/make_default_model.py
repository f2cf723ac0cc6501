#!/usr/bin/env python
"""Reproduce ``checkpoints/default``: the shipped violin model of ddsp-pd.

    python scripts/make_default_model.py            # all stages, ~40 min on 2 CPU cores
    python scripts/make_default_model.py --stage export   # only re-export a finished run

Stages:
1. ``audio``: 10 seeded violin melodies of 30 s (FluidR3 GM soundfont, MIT licence) with
   ``scripts/make_training_audio.py`` into ``build/default_model/audio``.
2. ``train``: ``ddsp-pd train`` with the ``small`` config (the same as
   ``ddsp-pd train build/default_model/audio -o build/default_model/train --config small
   --steps 1600 --batch-size 8 --seed 0``). Interrupted runs resume.
3. ``export``: the final checkpoint only (model variables, no optimizer state), its
   ``operative_config-0.gin`` and ``dataset_statistics.pkl`` into ``checkpoints/default``;
   the loss curve into ``docs/training_loss.png``; ``MODEL_CARD.md`` with the run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "default_model"
TARGET = ROOT / "checkpoints" / "default"
PLOT = ROOT / "docs" / "training_loss.png"

PROGRAM = 40  # General MIDI violin
CLIPS = 10
SECONDS = 30.0
DATA_SEED = 0
CONFIG = "small"
STEPS = 1600
BATCH = 8
SEED = 0
SAVE_EVERY = 100


def stage_audio() -> None:
    """Render the training melodies (skipped when they exist)."""
    from make_instrument_model import render_clips

    render_clips(WORK / "audio", PROGRAM, CLIPS, SECONDS, DATA_SEED)


def stage_train() -> None:
    """Train (or resume) the model; writes the run summary beside the checkpoints."""
    from ddsp_pd.training.loop import TrainOptions, train

    options = TrainOptions(
        steps=STEPS, batch_size=BATCH, seed=SEED, config=CONFIG, save_every=SAVE_EVERY, keep=3
    )
    result = train(WORK / "audio", WORK / "train", options, say=lambda m: print(m, flush=True))
    summary_path = WORK / "train" / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if result.final_step > result.start_step:
        summary.setdefault("runs", []).append(
            {
                "from_step": result.start_step,
                "to_step": result.final_step,
                "seconds": round(result.seconds, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    summary.update(
        {
            "config": CONFIG,
            "steps": result.final_step,
            "batch_size": BATCH,
            "seed": SEED,
            "examples": result.n_examples,
            "parameters": result.parameter_count,
        }
    )
    summary_path.write_text(json.dumps(summary, indent=2))


def _read_log(path: Path) -> tuple[list[int], list[float], list[float]]:
    import csv

    steps, losses, seconds = [], [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
            seconds.append(float(row["seconds"]))
    return steps, losses, seconds


def _plot(steps: list[int], losses: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(steps, losses, color="0.75", linewidth=0.8, label="per step")
    k = 25
    if len(losses) > k:
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="C0", linewidth=1.8, label=f"mean of {k} steps")
    ax.set_xlabel("training step (batch of 8 x 4 s)")
    ax.set_ylabel("multi-scale spectral loss")
    ax.set_title("ddsp-pd default model (violin, config 'small')")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def stage_export() -> None:
    """Copy the final checkpoint into ``checkpoints/default``, plot, write the model card."""
    from ddsp_pd.config import parameter_count
    from ddsp_pd.errors import OutputError
    from ddsp_pd.training.writer import ship_final_checkpoint

    train_dir = WORK / "train"
    try:
        final = ship_final_checkpoint(train_dir, TARGET)
    except OutputError as exc:
        sys.exit(str(exc))

    steps, losses, seconds = _read_log(train_dir / "train_log.csv")
    _plot(steps, losses, PLOT)

    import tensorflow as tf

    shapes = {n: s for n, s in tf.train.list_variables(str(TARGET / f"ckpt-{final}"))}
    n_params = parameter_count({n: s for n, s in shapes.items() if n.startswith("model/")})
    size = sum(p.stat().st_size for p in TARGET.iterdir())
    summary_path = train_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    first = sum(losses[:25]) / min(25, len(losses))
    last = sum(losses[-25:]) / min(25, len(losses))
    figures = {
        "steps": final,
        "parameters": n_params,
        "size_mb": round(size / 1e6, 2),
        "hours": seconds[-1] / 3600 if seconds else 0.0,
        "minutes": round(seconds[-1] / 60, 1) if seconds else 0.0,
        "first_loss": round(first, 3),
        "final_loss": round(last, 3),
        "examples": summary.get("examples"),
        "machine": (summary.get("runs") or [{}])[-1].get("machine", "unknown"),
        "date": (summary.get("runs") or [{}])[-1].get("date", "unknown"),
    }
    (TARGET / "MODEL_CARD.md").write_text(MODEL_CARD.format(**figures))
    print(json.dumps(figures, indent=2))


MODEL_CARD = """# ddsp-pd default model: violin (`checkpoints/default`)

A DDSP solo-instrument model (ddsp's `solo_instrument.gin` architecture at reduced size),
trained by `ddsp-pd train` and saved in ddsp's own checkpoint layout, so the ddsp library
and ddsp-pd both load it. It is what `ddsp-pd render` and the Pd patch use when no model is
named. It is a small model trained for 40 minutes on a CPU: it follows the pitch and
dynamics of its input (`tests/test_default_model.py`), but expect a much rougher timbre than
Magenta's pretrained models.

- **Architecture**: RnnFcDecoder (ch 128, GRU 192, 3 layers per stack) -> 60 harmonics
  + 65 noise bands -> trainable reverb (16000 samples, 1 s).
- **Parameters**: {parameters:,}.
- **Size on disk**: {size_mb} MB (`ckpt-{steps}`: model variables only, no optimizer state).
- **Audio**: 16 kHz mono, 250 frames/s (hop 64), loudness v3 (the ddsp >= 2.0 era).
- **Training data**: 10 random violin melodies of 30 s ({examples} examples of 4 s with a
  1 s hop), rendered by fluidsynth 2.3 from the FluidR3 GM soundfont, program 40 (violin),
  reverb and chorus off.
- **f0 of the training data**: ddsp-pd's default tracker (Praat autocorrelation), not CREPE.
- **Training**: {steps} steps of batch 8, Adam (lr 3e-4, decay 0.98 per 10000 steps),
  gradient clip norm 3, multi-scale spectral loss (FFT 2048 to 64), seed 0.
- **Time**: {minutes} min of training on {machine} ({date}; the run was stopped at
  step 800 and resumed, which gives the same weights as one run).
- **Loss**: {first_loss} (mean of the first 25 steps) -> {final_loss} (mean of the last 25).

## Licence of the data
The training audio was rendered from the FluidR3 GM soundfont by Frank Wen, released under
the MIT licence (Debian package `fluid-soundfont-gm`). No recordings of people were used.
The melodies were generated by `scripts/make_training_audio.py` (seeded, reproducible).

## Reproduce
    apt-get install fluidsynth fluid-soundfont-gm
    python scripts/make_default_model.py

See `docs/training.md` for the loss curve and for training your own model.

## Limitations
- Trained on {steps} steps only (ddsp's recipe runs 30000 on a GPU).
- The learned reverb is mostly a short filter (90 % of its energy in the first 50 ms), as in
  many short DDSP runs; it colours the sound like a body resonance.
- Range: violin G3 to E6 (MIDI 55 to 88); auto-adjust shifts other inputs by octaves.
- The melodies are synthetic (sample-based soundfont violin), not a real player.
"""


def main() -> None:
    """Run the chosen stages in order."""
    parser = argparse.ArgumentParser(description="Reproduce checkpoints/default.")
    parser.add_argument("--stage", choices=["all", "audio", "train", "export"], default="all")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.stage in ("all", "audio"):
        stage_audio()
    if args.stage in ("all", "train"):
        stage_train()
    if args.stage in ("all", "export"):
        stage_export()


if __name__ == "__main__":
    main()
