"""``ddsp-pd export``: a VST-config checkpoint as a ``.tflite`` the DDSP-VST plugin loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from ddsp_pd.errors import DdspPdError

_NEEDS_TF = "ddsp-pd export needs TensorFlow: pip install 'ddsp-pd[train]'"


def _have_tensorflow() -> bool:
    """Whether TensorFlow can be imported, without importing it (that takes seconds)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        return False


@click.command(name="export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The .tflite file to write; reverb_ir_<rate>_hz.wav is written beside it.",
)
@click.option(
    "--statistics",
    type=click.Path(path_type=Path),
    default=None,
    help="dataset_statistics.pkl to take the metadata from (default: the checkpoint's).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the noise the reverb impulse response is made from.",
)
def command(checkpoint: Path, output: Path, statistics: Path | None, seed: int) -> None:
    """Export CHECKPOINT (a VST-config ddsp checkpoint folder or zip) for the DDSP-VST plugin.

    Writes NAME.tflite (builtin TFLite ops; the plugin's tensor names; metadata.json
    packed inside) and the model's reverb impulse response beside it, as ddsp_export
    does. The plugin loads .tflite files from Documents/Magenta/DDSP/Models (subfolders
    too); ddsp-pd renders the file with its reverb (ddsp-pd render -c NAME.tflite).
    """
    if not _have_tensorflow():
        raise click.ClickException(_NEEDS_TF)
    try:
        from ddsp_pd.export.plugin import export_plugin_model

        try:
            # TensorFlow is imported only once the checkpoint has passed every check.
            result = export_plugin_model(
                checkpoint,
                output,
                statistics=statistics,
                seed=seed,
                say=lambda line: click.echo(line),
            )
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("tensorflow", "keras"):
                raise
            raise click.ClickException(_NEEDS_TF) from None
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    md = result.metadata
    click.echo(
        f"wrote {result.tflite} ({result.size_bytes:,} bytes; pitch MIDI "
        f"{md['mean_min_pitch_note']:.2f}-{md['mean_max_pitch_note']:.2f}, power "
        f"{md['mean_min_power_note']:.1f} to {md['mean_max_power_note']:.1f} dB; checked "
        f"against the checkpoint within {result.check_difference:.1e})"
    )
    if result.reverb_ir is not None:
        click.echo(f"wrote {result.reverb_ir}")
