"""``ddsp-pd render``: timbre transfer of one file from the shell."""

from __future__ import annotations

import contextlib
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click

from ddsp_pd.commands.options import precision_option
from ddsp_pd.errors import DdspPdError


def _check_controls(
    octave: float,
    loudness: float,
    confidence: float,
    adjust: bool,
    quiet: float,
    autotune: float,
    note_threshold: float,
):
    # ddsp_pd.controls is numpy only: bad values are refused before TensorFlow loads.
    from ddsp_pd.controls import ControlSettings

    return ControlSettings(
        octave=octave,
        loudness_db=loudness,
        confidence=confidence,
        adjust=adjust,
        quiet=quiet,
        autotune=autotune,
        note_threshold=note_threshold,
    ).validate()


def _check_features_file(path: Path) -> None:
    """Refuse a missing, empty or non-.npz features file (its arrays are checked on loading)."""
    from ddsp_pd.errors import InputError

    if not path.exists():
        raise InputError(f"features file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a features file")
    try:
        size = path.stat().st_size
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    if not is_zip:
        raise InputError(f"{path} is not a readable .npz features file (not a zip archive)")


def _check_input(
    input_path: Path | None, features_path: Path | None, shown: set[str]
) -> int | None:
    """Refuse a bad input from its header alone; return the input audio's rate (None: features).

    A truncated input is shown as a warning line now and its text added to ``shown``.
    """
    if input_path is None:
        _check_features_file(features_path)
        return None
    from ddsp_pd.audio_io import probe_audio

    info = probe_audio(input_path)
    if info.warning is not None:
        _warn(info.warning, shown)
    return info.sample_rate


def _check_output(
    output: Path | None,
    audio_format: str | None,
    subtype: str | None,
    input_path: Path | None,
    features_path: Path | None,
    force: bool,
) -> tuple[Path, str, str]:
    """The output path, format and subtype, or OutputError if any is unusable.

    Refuses an unknown extension or subtype, an output that is the input (unless ``force``)
    or the features file (always), and a path where no file can be created.
    """
    from ddsp_pd.audio_io import EXTENSION_BY_FORMAT, output_format
    from ddsp_pd.errors import OutputError
    from ddsp_pd.output_path import check_writable, same_file

    if output is None:
        source = input_path if input_path is not None else features_path
        extension = EXTENSION_BY_FORMAT[audio_format.upper()] if audio_format else ".wav"
        output = Path(f"{source.stem}.ddsp{extension}")
    fmt, subtype = output_format(output, audio_format, subtype)
    if features_path is not None and same_file(output, features_path):
        raise OutputError(f"refusing to write over the features file {features_path}")
    if input_path is not None and same_file(output, input_path) and not force:
        what = "is the input" if output == input_path else f"is the input file {input_path}"
        raise OutputError(
            f"refusing to write over the input: {output} {what} (give --force to replace it)"
        )
    check_writable(output)
    return output, fmt, subtype


def _check_controls_out(
    controls_out: Path | None,
    output: Path,
    input_path: Path | None,
    features_path: Path | None,
) -> Path | None:
    """The ``--controls-out`` path, or OutputError: it must be an ``.npz`` that is none of
    the input, the features file or the audio output, where a file can be created."""
    if controls_out is None:
        return None
    from ddsp_pd.errors import OutputError
    from ddsp_pd.output_path import check_writable, same_file

    if controls_out.suffix.lower() != ".npz":
        raise OutputError(f"--controls-out must name an .npz file, got {controls_out}")
    for other, what in (
        (input_path, "the input"),
        (features_path, "the features file"),
        (output, "the audio output"),
    ):
        if other is not None and same_file(controls_out, other):
            raise OutputError(f"refusing to write the controls over {what} {other}")
    check_writable(controls_out)
    return controls_out


def _model_line(loaded: object) -> str:
    """``checkpoint: NAME (what kind)`` for the render's log."""
    kind = getattr(loaded, "kind", "solo")
    era = getattr(loaded, "era", "")
    what = {
        "vst": "vst: DDSP-VST-config checkpoint, power",
        "tflite": "tflite: DDSP-VST plugin model, power",
    }.get(kind, era)
    return f"checkpoint: {getattr(loaded, 'name', '')} ({what})"


def _warn(message: str, shown: set[str]) -> None:
    if message not in shown:
        shown.add(message)
        click.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def _audio_warnings(shown: set[str]) -> Iterator[None]:
    """Show the AudioWarnings raised inside as warning lines, each text once."""
    from ddsp_pd.audio_io import AudioWarning

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always", AudioWarning)
            caught = recorded
            yield
    finally:
        # Shown once the recording is over, so that other warnings go their usual way.
        for warning in caught:
            if issubclass(warning.category, AudioWarning):
                _warn(str(warning.message), shown)
            else:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )


@click.command(name="render")
@click.argument(
    "input_path", metavar="INPUT", required=False, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "-c",
    "--checkpoint",
    default=None,
    metavar="DIR|ZIP|NAME",
    help="Model: a checkpoint folder or .zip, a DDSP-VST .tflite (or a folder or .zip of one), "
    "or a name in the checkpoint folders [default: shipped model].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file; its extension names the format: .wav, .flac, .ogg, .aiff or .aif "
    "[default: INPUT_STEM.ddsp.wav in the current folder].",
)
@click.option(
    "--format",
    "audio_format",
    type=click.Choice(["wav", "flac", "ogg", "aiff"], case_sensitive=False),
    default=None,
    help="Output format, whatever the extension [default: the output's extension's].",
)
@click.option(
    "--subtype",
    default=None,
    metavar="NAME",
    help="Sample encoding: PCM_16, PCM_24, FLOAT, VORBIS, ... [default: FLOAT for WAV, "
    "PCM_24 for FLAC and AIFF, VORBIS for OGG].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Let the output replace the input file (still written atomically).",
)
@click.option(
    "--features",
    "features_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Render from a .npz with f0_hz, f0_confidence and the model's level at its frame "
    "rate: loudness_db (solo models) or power_db (DDSP-VST checkpoints and .tflite models).",
)
@click.option(
    "--controls-out",
    "controls_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.npz",
    help="Also write the frame-rate synthesizer controls (f0_hz, amplitudes, "
    "harmonic_distribution, noise_magnitudes) to this .npz.",
)
@click.option(
    "--sample-rate",
    type=click.IntRange(8000, 192000),
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
@precision_option
def command(
    input_path: Path | None,
    checkpoint: str | None,
    output: Path | None,
    audio_format: str | None,
    subtype: str | None,
    force: bool,
    features_path: Path | None,
    controls_out: Path | None,
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
    precision: str,
) -> None:
    """Render timbre transfer of INPUT (any audio file) with a DDSP model of any kind.

    A MIDI file (.mid) as INPUT renders its notes instead (the highest where they overlap).
    """
    if (input_path is None) == (features_path is None):
        raise click.UsageError("give an INPUT audio file or --features FILE.npz (exactly one)")
    try:
        # Everything that can be checked without TensorFlow and the model is checked first,
        # so a typo or a bad file costs milliseconds, not the seconds a model takes to load.
        controls = _check_controls(
            octave, loudness, confidence, adjust, quiet, autotune, note_threshold
        )
        shown: set[str] = set()
        if input_path is not None and input_path.suffix.lower() in (".mid", ".midi"):
            # A MIDI file: its notes drive the model (ddsp_pd/stream/midi_render.py).
            from ddsp_pd.stream.midi_render import render_midi_command

            _, line = render_midi_command(
                input_path, checkpoint, output, audio_format, subtype, sample_rate, seed,
                normalize, controls,
            )  # fmt: skip
            click.echo(line)
            return
        input_rate = _check_input(input_path, features_path, shown)
        output, fmt, subtype = _check_output(
            output, audio_format, subtype, input_path, features_path, force
        )
        controls_out = _check_controls_out(controls_out, output, input_path, features_path)
        out_rate = sample_rate or input_rate
        if out_rate is not None:
            from ddsp_pd.audio_io import check_encodable

            check_encodable(fmt, subtype, out_rate)

        from ddsp_pd.transfer import Engine, RenderSettings

        settings = RenderSettings(
            controls=controls, sample_rate=sample_rate, normalize=normalize, seed=seed
        )
        settings.validate()
        started = time.perf_counter()
        engine = Engine(tracker=tracker, precision=precision)
        click.echo("loading checkpoint ...", err=True)
        loaded = engine.load_model(checkpoint)
        click.echo(_model_line(loaded), err=True)

        def progress(stage: str, fraction: float) -> None:
            if fraction == 0.0:
                click.echo(f"{'writing' if stage == 'write' else stage} ...", err=True)

        from ddsp_pd.longform import render_file

        with _audio_warnings(shown):
            # In memory, or block by block with bounded memory for long inputs.
            result = render_file(
                engine,
                loaded,
                settings,
                output,
                fmt,
                subtype,
                input_path=input_path,
                features_path=features_path,
                progress=progress,
                keep_controls=controls_out is not None,
            )
        if controls_out is not None:
            from ddsp_pd.errors import OutputError
            from ddsp_pd.kinds.controls import write_controls_npz

            if result.controls is None:  # every path keeps them when asked
                raise OutputError(f"the render kept no controls: {controls_out} not written")
            model = loaded.model
            write_controls_npz(controls_out, result.controls, model.frame_rate, model.sample_rate)
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.adjusted.report.message, err=True)
    seconds = result.seconds
    gain = f", normalised by {result.gain_db:+.1f} dB" if settings.normalize else ""
    click.echo(
        f"wrote {output} ({fmt} {subtype}, {seconds:.2f} s at {result.sample_rate} Hz{gain}) "
        f"in {time.perf_counter() - started:.2f} s"
    )
    if controls_out is not None:
        frames = result.controls.n_frames
        click.echo(f"wrote {controls_out} (synthesizer controls, {frames} frames)")
