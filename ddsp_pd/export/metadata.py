"""``metadata.json`` of an export: what the DDSP-VST plugin reads from inside a ``.tflite``.

The fields and their order are those ``ddsp_export`` writes (see
:mod:`ddsp_pd.kinds.vst_metadata` for what each means). The four statistics come from the
checkpoint's ``dataset_statistics.pkl`` (:meth:`DatasetStatistics.model_ranges`, the
note-on pitch and power ranges ddsp's ``compute_dataset_statistics`` records); their Hz
values are ``midi_to_hz`` computed in float32, as ddsp computes them, so that the same
statistics give the same numbers. The plugin identifies a model by ``export_time`` (it
keeps the chosen instrument by that string), so every export gets its own.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import numpy as np

from ddsp_pd import __version__
from ddsp_pd.config import ModelConfig
from ddsp_pd.statistics import ModelRanges

__all__ = ["METADATA_FIELDS", "metadata_bytes", "midi_to_hz_float32", "plugin_metadata"]

#: Every field, in ddsp_export's order.
METADATA_FIELDS = (
    "mean_min_pitch_note",
    "mean_max_pitch_note",
    "mean_min_pitch_note_hz",
    "mean_max_pitch_note_hz",
    "mean_min_power_note",
    "mean_max_power_note",
    "version",
    "export_time",
    "num_harmonics",
    "num_noise_amps",
    "frame_rate",
    "frame_size",
    "sample_rate",
)


def midi_to_hz_float32(note: float) -> float:
    """``440 * 2 ** ((note - 69) / 12)`` in float32 (ddsp's ``core.midi_to_hz``)."""
    m = np.float32(note)
    hz = np.float32(440.0) * np.float32(2.0) ** ((m - np.float32(69.0)) / np.float32(12.0))
    return float(hz)


def _whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def plugin_metadata(
    config: ModelConfig,
    ranges: ModelRanges,
    export_time: datetime.datetime | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The metadata dict for a model of ``config`` trained on data with ``ranges``.

    ``version`` names what made the file (default ``"ddsp-pd <version>"``; ddsp writes its
    own version number); ``export_time`` defaults to now, in ISO format as ddsp writes it.
    """
    when = export_time or datetime.datetime.now()
    values: dict[str, Any] = {
        "mean_min_pitch_note": float(np.float32(ranges.pitch_min_note)),
        "mean_max_pitch_note": float(np.float32(ranges.pitch_max_note)),
        "mean_min_pitch_note_hz": midi_to_hz_float32(ranges.pitch_min_note),
        "mean_max_pitch_note_hz": midi_to_hz_float32(ranges.pitch_max_note),
        "mean_min_power_note": float(np.float32(ranges.power_min_db)),
        "mean_max_power_note": float(np.float32(ranges.power_max_db)),
        "version": version or f"ddsp-pd {__version__}",
        "export_time": when.isoformat(),
        "num_harmonics": int(config.n_harmonics),
        "num_noise_amps": int(config.n_noise_bands),
        "frame_rate": _whole(config.frame_rate),
        "frame_size": int(config.power_frame_size or 0),
        "sample_rate": int(config.sample_rate),
    }
    return {name: values[name] for name in METADATA_FIELDS}


def metadata_bytes(metadata: dict[str, Any]) -> bytes:
    """The JSON text ddsp writes (``json.dumps`` defaults: one line), UTF-8."""
    return json.dumps(metadata).encode("utf-8")
