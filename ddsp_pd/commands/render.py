"""``ddsp-pd render``: timbre transfer of one file from the shell."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ddsp_pd.errors import DdspPdError


def _options_to_settings(
    octave: float,
    loudness: float,
    confidence: float,
    adjust: bool,
    quiet: float,
    autotune: float,
    note_threshold: float,
    sample_rate: int | None,
    normalize: bool,
    seed: int,
):
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import RenderSettings

    controls = ControlSettings(
        octave=octave,
        loudness_db=loudness,
        confidence=confidence,
        adjust=adjust,
        quiet=quiet,
        autotune=autotune,
        note_threshold=note_threshold,
    )
    settings = RenderSettings(
        controls=controls, sample_rate=sample_rate, normalize=normalize, seed=seed
    )
    settings.validate()
    return settings


@click.command(name="render")
@click.argument(
    "input_path", metavar="INPUT", required=False, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "-c",
    "--checkpoint",
    default=None,
    metavar="DIR|ZIP|NAME",
    help="Checkpoint folder, .zip, or name in the checkpoint folders [default: shipped model].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output WAV [default: INPUT_STEM.ddsp.wav in the current folder].",
)
@click.option(
    "--features",
    "features_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Render from a .npz with f0_hz, f0_confidence, loudness_db at the model frame rate.",
)
@click.option(
    "--sample-rate",
    type=int,
    default=None,
    help="Output rate in Hz [default: the input's; the model's for --features].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option(
    "--normalize/--no-normalize",
    default=True,
    show_default=True,
    help="Peak-normalise the result to -1 dBFS.",
)
@click.option("--octave", type=float, default=0.0, show_default=True, help="f0 shift in octaves.")
@click.option(
    "--loudness",
    type=float,
    default=0.0,
    show_default=True,
    help="Loudness shift in dB (reaches the decoder).",
)
@click.option(
    "--confidence",
    type=float,
    default=0.2,
    show_default=True,
    help="f0 confidence gate: frames below it get no harmonic part.",
)
@click.option(
    "--adjust/--no-adjust",
    default=True,
    show_default=True,
    help="Auto-adjust pitch register and loudness to the model's dataset statistics.",
)
@click.option(
    "--quiet",
    type=float,
    default=20.0,
    show_default=True,
    help="dB taken off note-off frames (with --adjust).",
)
@click.option(
    "--autotune",
    type=float,
    default=0.0,
    show_default=True,
    help="0..1: how far f0 snaps to the best-fitting major scale (with --adjust).",
)
@click.option(
    "--note-threshold",
    type=float,
    default=1.0,
    show_default=True,
    help="Note-on threshold of auto-adjust's note detection.",
)
@click.option("--tracker", default="default", show_default=True, help="f0 tracker to use.")
def command(
    input_path: Path | None,
    checkpoint: str | None,
    output: Path | None,
    features_path: Path | None,
    sample_rate: int | None,
    seed: int,
    normalize: bool,
    octave: float,
    loudness: float,
    confidence: float,
    adjust: bool,
    quiet: float,
    autotune: float,
    note_threshold: float,
    tracker: str,
) -> None:
    """Render timbre transfer of INPUT (any audio file) with a DDSP checkpoint."""
    if (input_path is None) == (features_path is None):
        raise click.UsageError("give an INPUT audio file or --features FILE.npz (exactly one)")
    source = input_path if input_path is not None else features_path
    if not source.is_file():
        # Checked before TensorFlow and the model load, so a typo costs no time.
        raise click.ClickException(f"file not found: {source}")
    if output is None:
        output = Path(f"{source.stem}.ddsp.wav")
    try:
        from ddsp_pd.audio_io import write_wav_atomic
        from ddsp_pd.transfer import Engine

        settings = _options_to_settings(
            octave,
            loudness,
            confidence,
            adjust,
            quiet,
            autotune,
            note_threshold,
            sample_rate,
            normalize,
            seed,
        )
        started = time.perf_counter()
        engine = Engine(tracker=tracker)
        click.echo("loading checkpoint ...", err=True)
        loaded = engine.load_model(checkpoint)
        click.echo(f"checkpoint: {loaded.name} ({loaded.checkpoint.config.era})", err=True)

        def progress(stage: str, fraction: float) -> None:
            if fraction == 0.0:
                click.echo(f"{stage} ...", err=True)

        result = engine.render(
            loaded, settings, input_path=input_path, features_path=features_path, progress=progress
        )
        click.echo("writing ...", err=True)
        write_wav_atomic(output, result.audio, result.sample_rate)
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.adjusted.report.message, err=True)
    seconds = len(result.audio) / result.sample_rate
    gain = f", normalised by {result.gain_db:+.1f} dB" if settings.normalize else ""
    click.echo(
        f"wrote {output} ({seconds:.2f} s at {result.sample_rate} Hz{gain}) "
        f"in {time.perf_counter() - started:.2f} s"
    )
