"""The whole export: checkpoint in, ``NAME.tflite`` and ``reverb_ir_<rate>_hz.wav`` out.

Order of work: everything that can be refused cheaply first (the output path, the
checkpoint and its config, the statistics), then the TensorFlow graph and its conversion,
then a check of the result before anything is written: the bytes are opened with the
LiteRT interpreter through :mod:`ddsp_pd.kinds.tflite` (the plugin's contract, by name;
the packed metadata), and a short sweep of pitches and powers is run frame by frame and
compared with ddsp-pd's numpy decoder (:mod:`ddsp_pd.inference.decoder`) and control
scaling. Both files are then written through temporary files and renamed into place.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddsp_pd.checkpoint import GIN_NAME, STATISTICS_NAME, Checkpoint, load_checkpoint
from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError, OutputError, StatisticsError
from ddsp_pd.export.metadata import metadata_bytes, plugin_metadata
from ddsp_pd.export.packing import pack_metadata
from ddsp_pd.export.plugin_check import check_exportable, rate_warnings
from ddsp_pd.export.reverb_ir import reverb_ir, reverb_ir_name, wav_bytes
from ddsp_pd.inference import synth as isynth
from ddsp_pd.inference.decoder import DecoderWeights, decode
from ddsp_pd.kinds.tflite import TfliteModel, vst_inputs
from ddsp_pd.kinds.tflite_files import TfliteFiles, embedded_metadata
from ddsp_pd.output_path import check_writable, same_file
from ddsp_pd.statistics import ModelRanges, load_statistics

__all__ = ["CHECK_TOLERANCE", "ExportResult", "export_plugin_model", "reference_controls"]

#: Largest difference allowed between the converted model and ddsp-pd's numpy decoder
#: on the check sweep (the fixture's own export differs from ddsp by 8.4e-7).
CHECK_TOLERANCE = 1e-4
_SUFFIX = ".tflite"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    tflite: Path
    reverb_ir: Path | None
    metadata: dict[str, Any]
    size_bytes: int
    check_difference: float
    warnings: tuple[str, ...] = ()


def _check_output(output: Path, inputs: list[Path]) -> Path:
    if output.suffix.lower() != _SUFFIX:
        raise OutputError(f"the export must be a .tflite file, not {output.name}")
    for path in inputs:
        if same_file(output, path):
            raise OutputError(f"refusing to write the export over its input {path}")
    return check_writable(output)


def _input_files(path: Path, ckpt: Checkpoint | None = None, *extra: Path | None) -> list[Path]:
    """The files an export reads: the path given and, once loaded, the checkpoint's own
    files (index, data, gin, statistics, the ``checkpoint`` file)."""
    files = [path, *(p for p in extra if p is not None)]
    folder = ckpt.directory if ckpt is not None else None
    if ckpt is not None and folder is not None and folder.is_dir():
        own = {GIN_NAME, STATISTICS_NAME, "checkpoint"}
        files += [
            p for p in folder.iterdir()
            if p.is_file() and (p.name in own or p.name.startswith(f"{ckpt.name}."))
        ]  # fmt: skip
    return files


def _ranges(ckpt: Checkpoint, statistics: Path | None) -> ModelRanges:
    path = statistics or ckpt.statistics_path
    if path is None:
        raise StatisticsError(
            f"{ckpt.path} has no dataset_statistics.pkl: the plugin's metadata needs the "
            "training data's pitch and power ranges (give one with --statistics)"
        )
    return load_statistics(path).model_ranges(source=str(path))


def reference_controls(
    config: ModelConfig,
    variables: Mapping[str, np.ndarray],
    f0_scaled: np.ndarray,
    pw_scaled: np.ndarray,
) -> dict[str, np.ndarray]:
    """What the export must output for these frames, from ddsp-pd's numpy decoder: the
    scaled controls ``amps`` ``[T, 1]``, ``harmonic_distribution``, ``noise_magnitudes``,
    and the GRU ``state`` after the last frame ``[U]`` (from zeros).

    f0 for the Nyquist mask is ``midi_to_hz(127 f0_scaled)`` in float32, as in the export.
    """
    weights = DecoderWeights.from_variables(config, variables)
    inputs = {
        "f0_scaled": np.asarray(f0_scaled, np.float32)[np.newaxis],
        "pw_scaled": np.asarray(pw_scaled, np.float32)[np.newaxis],
    }
    raw, state = decode(weights, {k: inputs[k] for k in config.input_keys})
    midi = inputs["f0_scaled"] * np.float32(127.0)
    f0_hz = np.float32(440.0) * np.float32(2.0) ** ((midi - np.float32(69.0)) / np.float32(12.0))
    scale = (config.exp_sigmoid_exponent, config.exp_sigmoid_max_value,
             config.exp_sigmoid_threshold)  # fmt: skip
    amps, dist = isynth.harmonic_controls(
        raw["amps"], raw["harmonic_distribution"], f0_hz, config.sample_rate,
        config.normalize_below_nyquist, *scale,
    )  # fmt: skip
    noise = isynth.noise_magnitudes(raw["noise_magnitudes"], config.noise_initial_bias, *scale)
    return {
        "amps": amps[0],
        "harmonic_distribution": dist[0],
        "noise_magnitudes": noise[0],
        "state": state[0],
    }


def _check_sweep(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """The frames the converted model is checked on: pitches from 55 Hz to 3.5 kHz (some
    frames unvoiced) and powers from silence (-80 dB) to -5 dB."""
    t = np.linspace(0.0, 1.0, n)
    f0 = 55.0 * 2.0 ** (6.0 * t)
    f0[::17] = 0.0
    power = -80.0 + 75.0 * np.sin(np.pi * t) ** 2
    return vst_inputs(f0, power)


def _check_model(
    flatbuffer: bytes, location: Path, config: ModelConfig, variables: Mapping[str, np.ndarray]
) -> float:
    """Open the export as the loader does and compare a sweep with the numpy decoder."""
    packed = embedded_metadata(flatbuffer, str(location))
    if packed is None:
        raise CheckpointError("internal error: the packed metadata.json cannot be read back")
    files = TfliteFiles(location, str(location), location.stem, flatbuffer, packed)
    f0_scaled, pw_scaled = _check_sweep()
    with TfliteModel(files) as model:
        outputs, state = model.run(f0_scaled, pw_scaled)
    expected = reference_controls(config, variables, f0_scaled, pw_scaled)
    got = {
        "amps": outputs.amps,
        "harmonic_distribution": outputs.harmonic_distribution,
        "noise_magnitudes": outputs.noise_magnitudes,
        "state": state,
    }
    worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    if not np.isfinite(worst) or worst > CHECK_TOLERANCE:
        raise CheckpointError(
            f"the converted model differs from the checkpoint's decoder by {worst:.3g} "
            f"(more than {CHECK_TOLERANCE:g}): not written"
        )
    return worst


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_plugin_model(
    checkpoint: str | Path,
    output: str | Path,
    *,
    statistics: str | Path | None = None,
    seed: int = 0,
    export_time: datetime.datetime | None = None,
    say: Callable[[str], None] = print,
) -> ExportResult:
    """Export the VST-config checkpoint at ``checkpoint`` to ``output`` (``NAME.tflite``)
    for the DDSP-VST plugin, with ``reverb_ir_<rate>_hz.wav`` beside it.

    ``statistics`` replaces the checkpoint's ``dataset_statistics.pkl``; ``seed`` draws the
    noise of a ``FilteredNoiseReverb`` IR. Raises :class:`CheckpointError`,
    :class:`StatisticsError` or :class:`OutputError` with one line saying why; needs
    TensorFlow (``ModuleNotFoundError`` otherwise, before anything is written).
    """
    source = Path(checkpoint).expanduser()
    target = Path(output).expanduser()
    stats_path = Path(statistics).expanduser() if statistics is not None else None
    _check_output(target, _input_files(source, None, stats_path))
    with load_checkpoint(source) as ckpt:
        config = ckpt.config
        check_exportable(config, where=str(source))
        warnings = tuple(rate_warnings(config))
        for line in warnings:
            say(f"warning: {line}")
        ranges = _ranges(ckpt, stats_path)
        _check_output(target, _input_files(source, ckpt, stats_path))
        variables = dict(ckpt.variables)
    ir = reverb_ir(config, variables, seed=seed)
    when = export_time or datetime.datetime.now()
    metadata = plugin_metadata(config, ranges, export_time=when)

    from ddsp_pd.export.tf_graph import PluginStep, convert_to_tflite

    say(f"converting {source.name} ({config.ch} ch, GRU {config.rnn_channels}) to TFLite")
    flatbuffer = pack_metadata(
        convert_to_tflite(PluginStep(config, variables)), metadata_bytes(metadata), when
    )
    difference = _check_model(flatbuffer, target, config, variables)
    ir_path = None
    if ir is not None:
        ir_path = target.parent / reverb_ir_name(config.sample_rate)
        if ir_path.exists():
            say(f"replacing {ir_path}")
        _write_atomically(ir_path, wav_bytes(ir, config.sample_rate))
    _write_atomically(target, flatbuffer)
    return ExportResult(target, ir_path, metadata, len(flatbuffer), difference, warnings)
