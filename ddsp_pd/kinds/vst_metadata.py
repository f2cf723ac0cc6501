"""``metadata.json`` of a DDSP-VST model: the statistics and rates ddsp_export writes.

ddsp_export packs it inside the ``.tflite`` (the flatbuffer is also a zip archive) and
also writes it beside. The fields, all optional here (the plugin itself shows zeros for
missing ones):

- ``mean_min_pitch_note``, ``mean_max_pitch_note`` (MIDI) and their ``*_hz`` values;
  ``mean_min_power_note``, ``mean_max_power_note`` (dB): from ddsp's
  ``compute_dataset_statistics`` over the training data's note-on frames.
- ``version`` (of ddsp), ``export_time``, ``num_harmonics``, ``num_noise_amps``.
- ``frame_rate``, ``frame_size`` (the power frame), ``sample_rate``: only in exports
  since 2022-03. Older exports lack them; they were made with the only values the plugin
  knows, 50 frames/s, 1024 and 16 kHz, which are then the defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ddsp_pd.errors import CheckpointError

__all__ = [
    "DEFAULT_FRAME_RATE",
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_SAMPLE_RATE",
    "METADATA_MAX_BYTES",
    "METADATA_NAME",
    "VstMetadata",
    "parse_metadata",
]

METADATA_NAME = "metadata.json"
#: ddsp's file is ~450 bytes; anything this large is not one.
METADATA_MAX_BYTES = 1 << 20
DEFAULT_FRAME_RATE = 50
DEFAULT_FRAME_SIZE = 1024
DEFAULT_SAMPLE_RATE = 16000

_FLOAT_FIELDS = (
    "mean_min_pitch_note",
    "mean_max_pitch_note",
    "mean_min_pitch_note_hz",
    "mean_max_pitch_note_hz",
    "mean_min_power_note",
    "mean_max_power_note",
)
_COUNT_FIELDS = ("num_harmonics", "num_noise_amps")
_RATE_DEFAULTS = {
    "frame_rate": DEFAULT_FRAME_RATE,
    "frame_size": DEFAULT_FRAME_SIZE,
    "sample_rate": DEFAULT_SAMPLE_RATE,
}
_TEXT_FIELDS = ("version", "export_time")


@dataclass(frozen=True)
class VstMetadata:
    """The parsed metadata; ``None`` where a field is absent.

    ``defaulted`` names the rate fields that were absent and took the pre-2022-03
    defaults; ``source`` says where the file came from (``"embedded"`` in the
    ``.tflite``, ``"beside"`` it, or ``"none"``); ``extra`` keeps any other fields.
    """

    mean_min_pitch_note: float | None = None
    mean_max_pitch_note: float | None = None
    mean_min_pitch_note_hz: float | None = None
    mean_max_pitch_note_hz: float | None = None
    mean_min_power_note: float | None = None
    mean_max_power_note: float | None = None
    version: str | None = None
    export_time: str | None = None
    num_harmonics: int | None = None
    num_noise_amps: int | None = None
    frame_rate: int = DEFAULT_FRAME_RATE
    frame_size: int = DEFAULT_FRAME_SIZE
    sample_rate: int = DEFAULT_SAMPLE_RATE
    defaulted: tuple[str, ...] = tuple(_RATE_DEFAULTS)
    source: str = "none"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def hop(self) -> int:
        """Samples per frame at the model's rate (320 for every DDSP-VST model)."""
        return self.sample_rate // self.frame_rate

    @property
    def pitch_note_range(self) -> tuple[float, float] | None:
        """``(mean_min_pitch_note, mean_max_pitch_note)`` in MIDI, from the ``*_hz`` fields
        when only those are present; None when neither pair is."""
        lo, hi = self.mean_min_pitch_note, self.mean_max_pitch_note
        if lo is None or hi is None:
            lo_hz, hi_hz = self.mean_min_pitch_note_hz, self.mean_max_pitch_note_hz
            if lo_hz is None or hi_hz is None or lo_hz <= 0 or hi_hz <= 0:
                return None
            lo, hi = _hz_to_midi(lo_hz), _hz_to_midi(hi_hz)
        return (lo, hi)

    @property
    def power_note_range(self) -> tuple[float, float] | None:
        """``(mean_min_power_note, mean_max_power_note)`` in dB, or None."""
        lo, hi = self.mean_min_power_note, self.mean_max_power_note
        return None if lo is None or hi is None else (lo, hi)

    def as_dict(self) -> dict[str, Any]:
        """The fields as ddsp names them (absent ones left out), plus the extra ones."""
        out: dict[str, Any] = dict(self.extra)
        for name in (*_FLOAT_FIELDS, *_TEXT_FIELDS, *_COUNT_FIELDS):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in _RATE_DEFAULTS:
            if name not in self.defaulted:
                out[name] = getattr(self, name)
        return out


def _hz_to_midi(hz: float) -> float:
    return 12.0 * (math.log2(hz) - math.log2(440.0)) + 69.0


def _number(value: Any, name: str, where: str) -> float:
    # bool is an int to Python, never a statistic; a huge JSON integer overflows float.
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not isinstance(value, (int, float)) or not math.isfinite(number):
        raise CheckpointError(f"{where}: metadata.json field {name} is not a finite number")
    return number


def _count(value: Any, name: str, where: str) -> int:
    number = _number(value, name, where)
    if number != int(number) or number < 1 or number > 1 << 24:
        raise CheckpointError(f"{where}: metadata.json field {name} is not a positive integer")
    return int(number)


def parse_metadata(
    data: bytes | Mapping[str, Any] | None, where: str = "model", source: str = "embedded"
) -> VstMetadata:
    """Parse ``metadata.json`` (its bytes, or the decoded object; None = no file).

    ``where`` names the model in error messages. Raises :class:`CheckpointError` when the
    file is not a JSON object or a field has the wrong type or an impossible value.
    """
    if data is None:
        return VstMetadata()
    if isinstance(data, (bytes, bytearray)):
        if len(data) > METADATA_MAX_BYTES:
            raise CheckpointError(f"{where}: metadata.json is over {METADATA_MAX_BYTES:,} bytes")
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"{where}: metadata.json is not valid JSON ({exc})") from exc
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: metadata.json is not a JSON object")
    values: dict[str, Any] = {}
    for name in _FLOAT_FIELDS:
        if obj.get(name) is not None:
            values[name] = _number(obj[name], name, where)
    for name in _COUNT_FIELDS:
        if obj.get(name) is not None:
            values[name] = _count(obj[name], name, where)
    for name in _TEXT_FIELDS:
        if obj.get(name) is not None:
            values[name] = str(obj[name])
    defaulted = []
    for name, default in _RATE_DEFAULTS.items():
        if obj.get(name) is None:
            values[name] = default
            defaulted.append(name)
        else:
            values[name] = _count(obj[name], name, where)
    if values["sample_rate"] % values["frame_rate"]:
        raise CheckpointError(
            f"{where}: metadata.json sample_rate {values['sample_rate']} is not a whole "
            f"number of frames at frame_rate {values['frame_rate']}"
        )
    known = {*_FLOAT_FIELDS, *_COUNT_FIELDS, *_TEXT_FIELDS, *_RATE_DEFAULTS}
    extra = {str(k): v for k, v in obj.items() if k not in known}
    return VstMetadata(**values, defaulted=tuple(defaulted), source=source, extra=extra)
