"""``ddsp-pd info``: describe a model of any kind without rendering anything.

ddsp checkpoints (solo-instrument and DDSP-VST-config) are described from their gin file,
index and statistics alone; a DDSP-VST ``.tflite`` is opened and checked against the
plugin's contract (:mod:`ddsp_pd.kinds.tflite`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ddsp_pd.errors import DdspPdError

if TYPE_CHECKING:
    from ddsp_pd.checkpoint import CheckpointInfo

_FIELDS_SHOWN = 6
_ERA_NOTES = {
    "0.x": "ddsp 0.x (2020): loudness v1, ld_scaled = ld / 120 + 1",
    "1.x": "ddsp 1.x: loudness v1, ld_scaled = ld / 120 + 1",
    "2.x": "ddsp 2.0-3.7: loudness v3, ld_scaled = ld / 80 + 1",
    "vst": "DDSP-VST config (vst.gin): power conditioning, pw_scaled = pw / 80 + 1",
}
_KIND_LINES = {
    "vst": "kind: ddsp checkpoint, DDSP-VST config (models/vst/vst.gin)",
}


def describe_any(path: str | Path) -> tuple[list[str], str | None]:
    """:func:`describe` for a checkpoint, the ``.tflite`` lines for a DDSP-VST plugin model.

    A folder or zip holding neither raises :class:`~ddsp_pd.errors.CheckpointError`.
    """
    from ddsp_pd.errors import CheckpointError
    from ddsp_pd.kinds.loader import is_tflite, no_model_problem

    path = Path(path)
    if is_tflite(path):
        from ddsp_pd.kinds.tflite import describe_tflite

        return describe_tflite(path), None
    problem = no_model_problem(path)
    if problem is not None:
        raise CheckpointError(problem)
    return describe(path)


def _ranges_line(info: CheckpointInfo) -> str | None:
    """The note-on ranges a power model's auto-adjust uses, from its statistics."""
    if info.statistics_path is None or info.statistics_problem:
        return None
    from ddsp_pd.statistics import load_statistics

    try:
        ranges = load_statistics(info.statistics_path).model_ranges()
    except DdspPdError as exc:
        return f"auto-adjust ranges: none ({exc})"
    return (
        f"auto-adjust ranges: pitch MIDI {ranges.pitch_min_note:.2f} to "
        f"{ranges.pitch_max_note:.2f}, power {ranges.power_min_db:.2f} to "
        f"{ranges.power_max_db:.2f} dB (mean note min/max)"
    )


def describe(path: str | Path) -> tuple[list[str], str | None]:
    """Lines describing the checkpoint at ``path`` and, if it cannot be rendered, why.

    Reads only the gin file, the index and the statistics: works on index-only folders.
    """
    from ddsp_pd.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(path)
    lines = [f"checkpoint: {info.path}"]
    others = [name for name in info.available if name != info.name]
    chosen = f"{info.name}" + (f" (also present: {', '.join(others)})" if others else "")
    lines.append(f"chosen: {chosen}")
    lines.append(f"weights: {_weights(info)}")
    lines.append(_KIND_LINES.get(info.era, "kind: ddsp checkpoint (solo_instrument family)"))
    lines.append(f"era: {info.era} - {_ERA_NOTES.get(info.era, '')}".rstrip(" -"))
    lines.append(f"parameters: {info.parameter_count:,}")
    c = info.config
    if c is not None:
        frame_rate = f"{c.frame_rate:g}"
        lines.append(
            f"sample rate: {c.sample_rate} Hz, frame rate: {frame_rate}/s, hop: {c.hop} samples"
        )
        if c.level == "power":
            lines.append(
                f"power: frames of {c.power_frame_size} samples (centred, no window), "
                f"floor {c.min_db:g} dB"
            )
        else:
            lines.append(
                f"loudness: {c.loudness_version}, floor {c.min_db:g} dB"
                + (" (trained with compute_loudness)" if c.compute_loudness else "")
            )
        if c.n_samples:
            lines.append(
                f"training clips: {c.n_samples} samples ({c.n_samples / c.sample_rate:g} s)"
            )
        lines += [
            f"decoder: RnnFcDecoder, inputs {', '.join(c.input_keys)}; ch {c.ch}, "
            f"{c.rnn_type.upper()} {c.rnn_channels}, {c.layers_per_stack} layers per stack",
            "outputs: " + ", ".join(f"{name} {size}" for name, size in c.output_splits),
            f"harmonic: {c.n_harmonics} harmonics, amplitudes upsampled '{c.amp_resample_method}'"
            + (", normalised below Nyquist" if c.normalize_below_nyquist else ""),
            f"noise: {c.n_noise_bands} bands, initial bias {c.noise_initial_bias:g}"
            + (f", window {c.noise_window_size}" if c.noise_window_size > 0 else ""),
        ]
        if c.reverb and c.reverb_type == "filtered_noise":
            lines.append(
                f"reverb: FilteredNoiseReverb, {c.reverb_length} samples "
                f"({c.reverb_length / c.sample_rate:.2f} s) of noise filtered by learned "
                f"magnitudes ({c.reverb_n_frames} frames x {c.reverb_n_filter_banks} bands, "
                f"window {c.reverb_window_size}); noise drawn from the render's seed"
                + (", dry added" if c.reverb_add_dry else ", wet only")
            )
        elif c.reverb:
            lines.append(
                f"reverb: trainable, {c.reverb_length} samples "
                f"({c.reverb_length / c.sample_rate:.2f} s)"
                + (", dry added" if c.reverb_add_dry else ", wet only")
            )
        else:
            lines.append("reverb: none")
        if c.crop_size:
            lines.append(
                f"crop: {c.crop_size} samples at the {c.crop_location} "
                f"({c.crop_size / c.hop:g} frame)"
            )
        lines += [f"note: {note}" for note in c.notes]
    if info.statistics_size is None:
        lines.append("statistics: none (auto-adjust unavailable)")
    else:
        text = f"statistics: dataset_statistics.pkl, {info.statistics_size:,} bytes"
        if info.statistics_problem:
            text += f" - unusable: {info.statistics_problem}"
        elif info.statistics_fields:
            fields = info.statistics_fields
            shown = ", ".join(fields[:_FIELDS_SHOWN])
            more = f" and {len(fields) - _FIELDS_SHOWN} more" if len(fields) > _FIELDS_SHOWN else ""
            layout = f"layout {info.statistics_layout}; " if info.statistics_layout else ""
            text += f" ({layout}{shown}{more})"
        lines.append(text)
    if c is not None and c.level == "power":
        ranges = _ranges_line(info)
        if ranges is not None:
            lines.append(ranges)
    if info.refusal:
        return lines, f"cannot be rendered: {info.refusal}"
    if info.index_only:
        return lines, "cannot be rendered: the weights (.data file) are missing"
    if not info.has_data:
        return lines, f"cannot be rendered: the weights are damaged ({_damage(info)})"
    return lines, None


def _damage(info: CheckpointInfo) -> str:
    return "; ".join(info.data_problems)


def _weights(info: CheckpointInfo) -> str:
    """Present, missing, or damaged: data shard sizes checked against the index."""
    if info.has_data:
        return "present"
    if info.index_only:
        return "missing (index only, no .data file)"
    return f"damaged - {_damage(info)}"


@click.command(name="info")
@click.argument("checkpoint", metavar="CHECKPOINT")
def command(checkpoint: str) -> None:
    """Describe CHECKPOINT (folder, .zip, ckpt-N.index, a DDSP-VST .tflite, or a model's
    name in the checkpoint folders and the model library): kind, era, sizes, rates,
    statistics or metadata."""
    from ddsp_pd.catalog import resolve_checkpoint

    try:
        lines, problem = describe_any(resolve_checkpoint(checkpoint))
    except DdspPdError as err:
        raise click.ClickException(str(err)) from err
    for line in lines:
        click.echo(line)
    if problem:
        raise click.ClickException(problem)
