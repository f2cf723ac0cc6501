#!/usr/bin/env python
"""Recipe of ddsp-pd's shipped instruments: ``checkpoints/pd_<instrument>`` (DDSP-VST config).

    python scripts/make_instrument_model.py flute              # all stages
    python scripts/make_instrument_model.py cello --stage train --threads 1 --steps 900
    python scripts/make_instrument_model.py clarinet --stage export

One recipe per instrument, all alike (the instrument picks the General MIDI program):

======== ======= ==========================
name     program range (MIDI notes)
======== ======= ==========================
flute    73      60 .. 93 (C4 .. A6)
clarinet 71      50 .. 84 (D3 .. C6)
cello    42      36 .. 67 (C2 .. G4)
violin   40      55 .. 88 (G3 .. E6)
======== ======= ==========================

Stages:

1. ``audio``: ``TRAIN_CLIPS`` seeded melodies of ``TRAIN_SECONDS`` (10 minutes; scales,
   arpeggios, leaps, held notes with swells and vibrato, legato and detached playing, rests,
   pp to ff) rendered by fluidsynth from the FluidR3 GM soundfont (MIT licence) with
   ``scripts/make_training_audio.py`` into ``build/instruments/<name>/audio``, and
   ``HELDOUT_CLIPS`` held-out melodies of ``HELDOUT_SECONDS`` from another seed
   (``HELDOUT_SEED``: no melody in common with the training set) into ``.../heldout``, kept
   out of training for ``benchmarks/eval_models.py`` and the tests. The first held-out melody
   is also written as a 16 kHz FLAC to ``tests/data/heldout/<name>.flac`` (committed, so the
   tests need no fluidsynth).
2. ``train``: ``ddsp-pd train`` with the ``vst-tiny`` config (the DDSP-VST plugin's
   architecture with its required sizes, 60 harmonics, 65 noise bands, GRU 512, and small
   MLP stacks: 3.4 MB per checkpoint instead of vst's 7.3 MB). The same as
   ``ddsp-pd train build/instruments/<name>/audio -o build/instruments/<name>/train
   --config vst-tiny --steps N --batch-size 8 --seed 0``, N the shipped model's steps (1950,
   2600, 1950, 1900 for the four, where their runs were stopped for time; ``--steps`` sets
   another); an interrupted run resumes, and
   a larger ``--steps`` continues a finished one (the learning rate depends on the step only,
   so stopping at any checkpoint gives the model a run of that many steps would).
3. ``export``: the newest checkpoint (model variables only, no optimizer state), its
   ``operative_config-0.gin`` and ``dataset_statistics.pkl`` into ``checkpoints/pd_<name>``,
   the loss curve (``loss.png``, and ``loss.csv``: the mean of every 25 steps), the
   DDSP-VST model ``pd_<name>.tflite`` (with its reverb IR) made by ``ddsp-pd export``
   beside them (the checkpoint's index makes ddsp-pd load the folder as the checkpoint; the
   plugin takes the ``.tflite``), and ``MODEL_CARD.md`` with the run's figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "instruments"
TESTDATA = ROOT / "tests" / "data" / "heldout"

#: name -> (General MIDI program, description for the model card, the shipped model's steps:
#: where its training was stopped for time; the learning rate depends on the step only, so one
#: run to that step gives the same model).
INSTRUMENTS: dict[str, tuple[int, str, int]] = {
    "flute": (73, "flute", 1950),
    "clarinet": (71, "clarinet", 2600),
    "cello": (42, "cello", 1950),
    "violin": (40, "violin", 1900),
}
TRAIN_CLIPS = 20
TRAIN_SECONDS = 30.0
DATA_SEED = 0
HELDOUT_CLIPS = 3
HELDOUT_SECONDS = 10.0
#: A seed the training set never uses (its melodies are drawn with DATA_SEED).
HELDOUT_SEED = 1000
#: The committed test clip: the first seconds of the first held-out melody.
TEST_CLIP_SECONDS = 5.0
CONFIG = "vst-tiny"
BATCH = 8
SEED = 0
SAVE_EVERY = 50
SMOOTH = 25


def model_name(instrument: str) -> str:
    """The shipped model's name: ``pd_<instrument>`` (``flute``, ``violin`` are Magenta's)."""
    return f"pd_{instrument}"


def work_dir(instrument: str) -> Path:
    """The build folder of one instrument (audio, held-out audio, training run)."""
    return BUILD / instrument


def render_clips(out: Path, program: int, clips: int, seconds: float, seed: int) -> None:
    """Render ``clips`` training melodies with General MIDI ``program`` into ``out`` with
    scripts/make_training_audio.py (skipped when that many are there)."""
    if out.is_dir() and len(list(out.glob("*.wav"))) == clips:
        print(f"audio: {clips} clips already in {out}")
        return
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_training_audio.py"), str(out),
         "--program", str(program), "--clips", str(clips), "--seconds", str(seconds),
         "--seed", str(seed)],
        check=True,
    )  # fmt: skip


def stage_audio(instrument: str) -> None:
    """Render the training and held-out melodies (skipped when they exist)."""
    import soundfile as sf

    program = INSTRUMENTS[instrument][0]
    work = work_dir(instrument)
    render_clips(work / "audio", program, TRAIN_CLIPS, TRAIN_SECONDS, DATA_SEED)
    render_clips(work / "heldout", program, HELDOUT_CLIPS, HELDOUT_SECONDS, HELDOUT_SEED)
    first = sorted((work / "heldout").glob("*.wav"))[0]
    audio, rate = sf.read(first, dtype="float32")
    TESTDATA.mkdir(parents=True, exist_ok=True)
    clip = TESTDATA / f"{instrument}.flac"
    sf.write(clip, audio[: round(TEST_CLIP_SECONDS * rate)], rate, format="FLAC")
    print(f"wrote {clip} ({clip.stat().st_size} bytes)")


def stage_train(instrument: str, steps: int, threads: int | None) -> None:
    """Train (or resume) the model; records each run (also a Ctrl-C'd one) in
    ``run_summary.json`` beside the checkpoints."""
    import tensorflow as tf

    if threads:
        # Set before any op runs: the machine's cores are shared with other work.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from ddsp_pd.training.loop import TrainOptions, train
    from ddsp_pd.training.writer import list_checkpoints

    train_dir = work_dir(instrument) / "train"
    done = list_checkpoints(train_dir) if train_dir.is_dir() else []
    run: dict[str, object] = {
        "from_step": done[-1] if done else 0,
        "target_steps": steps,
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "date": time.strftime("%Y-%m-%d"),
    }
    options = TrainOptions(
        steps=steps, batch_size=BATCH, seed=SEED, config=CONFIG, save_every=SAVE_EVERY, keep=2
    )
    try:
        result = train(
            work_dir(instrument) / "audio", train_dir, options, say=lambda m: print(m, flush=True)
        )
    except KeyboardInterrupt:
        # train() saved the step it reached: record the run as stopped there.
        run.update(to_step=list_checkpoints(train_dir)[-1], stopped=True)
        record_run(train_dir, run, {"target_steps": steps})
        raise
    run["to_step"] = result.final_step
    run["seconds"] = round(result.seconds, 1)
    record_run(
        train_dir,
        run,
        {
            "config": CONFIG,
            "steps": result.final_step,
            "batch_size": BATCH,
            "seed": SEED,
            "examples": result.n_examples,
            "parameters": result.parameter_count,
            "target_steps": steps,
        },
    )


def record_run(train_dir: Path, run: dict[str, object], fields: dict[str, object]) -> None:
    """Append a run that trained (to a later step than it started) and update the fields."""
    path = train_dir / "run_summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    if int(run.get("to_step", 0)) > int(run["from_step"]):
        summary.setdefault("runs", []).append(run)
    summary.update(fields)
    path.write_text(json.dumps(summary, indent=2))


def read_log(path: Path, up_to: int) -> tuple[list[int], list[float], list[float]]:
    """Step, loss and elapsed seconds of ``train_log.csv`` up to step ``up_to``."""
    steps, losses, seconds = [], [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["step"]) > up_to:
                break
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
            seconds.append(float(row["seconds"]))
    return steps, losses, seconds


def _plot(steps: list[int], losses: list[float], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    ax.plot(steps, losses, color="0.75", linewidth=0.7, label="per step")
    if len(losses) > SMOOTH:
        smooth = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
        ax.plot(steps[SMOOTH - 1 :], smooth, color="C0", linewidth=1.6, label=f"mean of {SMOOTH}")
    ax.set_xlabel(f"training step (batch of {BATCH} x 4 s)")
    ax.set_ylabel("multi-scale spectral loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _write_loss_csv(steps: list[int], losses: list[float], seconds: list[float], out: Path):
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "mean_loss", "minutes"])
        for i in range(0, len(steps), SMOOTH):
            chunk = losses[i : i + SMOOTH]
            j = min(i + SMOOTH, len(steps)) - 1
            writer.writerow([steps[j], f"{sum(chunk) / len(chunk):.4f}", f"{seconds[j] / 60:.2f}"])


def stage_export(instrument: str) -> None:
    """Ship the newest checkpoint, its loss curve, its .tflite and its model card."""
    from ddsp_pd.config import parameter_count
    from ddsp_pd.errors import OutputError
    from ddsp_pd.training.writer import ship_final_checkpoint

    name = model_name(instrument)
    target = ROOT / "checkpoints" / name
    train_dir = work_dir(instrument) / "train"
    try:
        final = ship_final_checkpoint(train_dir, target)
    except OutputError as exc:
        sys.exit(str(exc))

    steps, losses, seconds = read_log(train_dir / "train_log.csv", final)
    _plot(steps, losses, f"ddsp-pd {name} ({CONFIG})", target / "loss.png")
    _write_loss_csv(steps, losses, seconds, target / "loss.csv")

    tflite = target / f"{name}.tflite"
    subprocess.run(
        [str(Path(sys.executable).parent / "ddsp-pd"), "export", str(target), "-o", str(tflite)],
        check=True,
    )

    import tensorflow as tf

    shapes = dict(tf.train.list_variables(str(target / f"ckpt-{final}")))
    n_params = parameter_count({n: s for n, s in shapes.items() if n.startswith("model/")})
    tflite.chmod(0o644)  # written through a private temporary file; shipped files are readable
    plugin_files = (tflite, target / "reverb_ir_16000_hz.wav")
    ckpt_size = sum(
        p.stat().st_size for p in target.iterdir() if p.is_file() and p not in plugin_files
    )
    summary_path = train_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    runs = summary.get("runs") or [{}]
    first = sum(losses[:SMOOTH]) / min(SMOOTH, len(losses))
    last = sum(losses[-SMOOTH:]) / min(SMOOTH, len(losses))
    program, label, _ = INSTRUMENTS[instrument]
    low, high = _range(program)
    figures = {
        "name": name,
        "label": label,
        "instrument": instrument,
        "program": program,
        "low": low,
        "high": high,
        "config": CONFIG,
        "steps": final,
        "batch": BATCH,
        "parameters": n_params,
        "ckpt_mb": round(ckpt_size / 1e6, 2),
        "tflite_mb": round(tflite.stat().st_size / 1e6, 2),
        "minutes": round(seconds[-1] / 60, 1) if seconds else 0.0,
        "first_loss": round(first, 3),
        "final_loss": round(last, 3),
        "examples": summary.get("examples"),
        "clips": TRAIN_CLIPS,
        "clip_seconds": round(TRAIN_SECONDS),
        "train_minutes": round(TRAIN_CLIPS * TRAIN_SECONDS / 60),
        "heldout": HELDOUT_CLIPS,
        "heldout_seconds": round(HELDOUT_SECONDS),
        "runs": "; ".join(
            f"steps {r['from_step']}-{r['to_step']} with {r.get('threads') or 'all'} thread(s)"
            + (" (stopped for time)" if r.get("stopped") else "")
            for r in runs
            if r
        ),
        "threads": runs[-1].get("threads") or "all",
        "machine": runs[-1].get("machine", "unknown"),
        "date": " to ".join(dict.fromkeys(str(r.get("date", "unknown")) for r in runs)),
        "stopped": (
            ""
            if final >= summary.get("target_steps", final)
            else f" Stopped at step {final} for time (set to {summary['target_steps']})."
        ),
    }
    (target / "MODEL_CARD.md").write_text(MODEL_CARD.format(**figures))
    print(json.dumps(figures, indent=2))


def _range(program: int) -> tuple[int, int]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_training_audio import RANGES

    return RANGES[program]


MODEL_CARD = """# ddsp-pd shipped instrument: {label} (`{name}`)

A DDSP-VST model (ddsp's `models/vst/vst.gin` architecture with small MLP stacks, the
`{config}` config) trained by `ddsp-pd train` on synthetic {label} audio, shipped in two
formats: a ddsp checkpoint in this folder (`ddsp-pd render -c {name}`, the server, the Pd
patch, the ddsp library) and `{name}.tflite` beside it for Magenta's DDSP-VST plugin, made by
`ddsp-pd export`. It is a short CPU run: it follows the pitch and dynamics of its input
(`tests/test_shipped_models.py`), with a rougher timbre than Magenta's pretrained models.

- **Architecture**: RnnFcDecoder (inputs `pw_scaled`, `f0_scaled`; 1 layer per stack, ch 16,
  GRU 512) -> 60 harmonics + 65 noise bands -> FilteredNoiseReverb (100 x 16 grid, 4000
  samples) -> Crop.
- **Parameters**: {parameters:,}.
- **Size on disk**: checkpoint {ckpt_mb} MB (`ckpt-{steps}`: model variables only, no
  optimizer state; with the statistics, gin and this card), `.tflite` {tflite_mb} MB.
- **Audio**: 16 kHz mono, 50 frames/s (hop 320), power of 1024-sample frames.
- **Training data**: {clips} seeded random {label} melodies of {clip_seconds} s
  ({train_minutes} min, {examples} examples of 4 s with a 1 s hop), rendered by fluidsynth 2.3
  from the FluidR3 GM soundfont, program {program}, reverb and chorus off. Range MIDI
  {low} to {high}.
- **Held out**: {heldout} melodies of {heldout_seconds} s from another seed (no melody in
  common), used only by `benchmarks/eval_models.py` and the tests (`tests/data/heldout/
  {instrument}.flac` is the first 5 s of the first one).
- **f0 of the training data**: ddsp-pd's default tracker (Praat autocorrelation), not CREPE.
- **Training**: {steps} steps of batch {batch}, Adam (lr 3e-4, decay 0.98 per 10000
  steps), gradient clip norm 3, multi-scale spectral loss (FFT 2048 to 64), seed 0.{stopped}
- **Time**: {minutes} min of training on {machine}, {date}, no GPU, at nice 19 beside
  other jobs; the runs with 1 TensorFlow thread trained the four instruments at once. Runs:
  {runs} (a resumed run gives the weights one run would).
- **Loss**: {first_loss} (mean of the first 25 steps) -> {final_loss} (mean of the last 25);
  the curve is `loss.png`, its 25-step means `loss.csv`.
- **Measured** on the held-out melodies: see `docs/models.md` (`benchmarks/eval_models.py`).

## Licence of the data
The training audio was rendered from the FluidR3 GM soundfont by Frank Wen, released under
the MIT licence (Debian package `fluid-soundfont-gm`). No recordings of people were used.
The melodies were generated by `scripts/make_training_audio.py` (seeded, reproducible).

## Reproduce
    apt-get install fluidsynth fluid-soundfont-gm
    python scripts/make_instrument_model.py {instrument}

## Limitations
- {steps} steps only (the Train_VST colab runs 30000 on a GPU): expect a buzzy timbre.
- The melodies are synthetic (a sample-based soundfont {label}), not a real player.
- The plugin ignores the learned reverb (its IR is written beside the `.tflite`).
"""


def main() -> None:
    """Run the chosen stages in order."""
    parser = argparse.ArgumentParser(description="Make one of ddsp-pd's shipped instruments.")
    parser.add_argument("instrument", choices=sorted(INSTRUMENTS))
    parser.add_argument("--stage", choices=["all", "audio", "train", "export"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="default: the shipped model's")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow threads")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.stage in ("all", "audio"):
        stage_audio(args.instrument)
    if args.stage in ("all", "train"):
        stage_train(args.instrument, args.steps or INSTRUMENTS[args.instrument][2], args.threads)
    if args.stage in ("all", "export"):
        stage_export(args.instrument)


if __name__ == "__main__":
    main()
