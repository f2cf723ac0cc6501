"""``ddsp-pd train``: fit a model to a folder of audio and write a ddsp-format checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from ddsp_pd.errors import DdspPdError

_CONFIGS = ("solo", "small", "tiny", "vst", "vst-tiny")


@click.command(name="train")
@click.argument("audio_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Checkpoint folder to write (and to resume from if it holds a run).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Train up to this step (a resumed run continues to it).",
)
@click.option(
    "--config",
    "config_name",
    type=click.Choice(_CONFIGS),
    default="small",
    show_default=True,
    help="Model: solo = ddsp's solo_instrument (4.8 M parameters), "
    "small = the shipped default's, tiny = for tests; vst = ddsp's vst.gin, the DDSP-VST "
    "plugin's model (power input, 1.9 M parameters; export it with ddsp-pd export), "
    "vst-tiny = a small one the plugin still takes (for tests).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initial weights, the batches and the noise.",
)
@click.option(
    "--save-every",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Write a checkpoint every this many steps (and at the end).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="How many checkpoints to keep.",
)
@click.option(
    "--tracker", default="praat", show_default=True, help="f0 tracker for the training audio."
)
def command(
    audio_dir: Path,
    output_dir: Path,
    steps: int,
    config_name: str,
    batch_size: int,
    seed: int,
    save_every: int,
    keep: int,
    tracker: str,
) -> None:
    """Train a DDSP model on the audio files in AUDIO_DIR (4 s examples, 16 kHz).

    Writes ddsp's checkpoint layout (ckpt-N, operative_config-0.gin,
    dataset_statistics.pkl) that `ddsp-pd render -c` and the ddsp library load; a
    `--config vst` checkpoint also exports to the DDSP-VST plugin (`ddsp-pd export`).
    Progress goes to stdout; Ctrl-C saves a checkpoint, and running the same command again
    resumes.
    """
    try:
        from ddsp_pd.training.dataset import find_audio_files

        find_audio_files(audio_dir)  # a wrong folder fails before TensorFlow loads
        try:
            from ddsp_pd.training.loop import TrainOptions, train
        except ModuleNotFoundError as exc:  # TensorFlow is the `train` extra
            if (exc.name or "").split(".")[0] not in ("tensorflow", "keras"):
                raise
            raise click.ClickException(
                "ddsp-pd train needs TensorFlow: pip install 'ddsp-pd[train]'"
            ) from None

        options = TrainOptions(
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            config=config_name,
            save_every=save_every,
            keep=keep,
            tracker=tracker,
        )
        train(audio_dir, output_dir, options, say=lambda line: click.echo(line))
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
