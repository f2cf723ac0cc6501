"""The server's settings: their OSC types, ranges and defaults, and conversions to and from OSC.

Pd sends every number as a 32-bit float, so an integer setting accepts an integral float and a
float setting accepts an int. Python-osc decodes OSC's ``T``/``F`` as bools; they are refused
because Pd cannot send them and a client that does is confused about the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ddsp_pd.errors import ControlError, DdspPdError

#: Longest string the server puts in a reply, in UTF-8 bytes (Pd cuts symbols over 999 bytes).
MAX_STRING_BYTES = 900
#: Largest seed (an OSC int is 32-bit signed; Pd's floats hold integers exactly up to 2**24).
MAX_SEED = 2**31 - 1


class OscError(DdspPdError):
    """A message the server cannot use: unknown address, wrong arity or types, undecodable."""

    code = "osc"


@dataclass(frozen=True)
class Setting:
    """One control the client can set: its kind (``float``, ``int``, ``bool``), range, default.

    ``renders`` says whether the value changes the rendered audio (then a change supersedes a
    running render and re-renders under ``/ddsp/auto 1``).
    """

    key: str
    kind: str
    default: float | int
    low: float | None = None
    high: float | None = None
    renders: bool = True
    #: an extra value allowed outside [low, high] (``samplerate 0`` = the input's rate)
    special: int | None = None

    def coerce(self, raw: object) -> float | int:
        """Turn one decoded OSC argument into this setting's value.

        Raises:
            OscError: the argument has the wrong type (string, blob, bool, NaN...).
            ControlError: the value is out of range.
        """
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise OscError(f"/ddsp/{self.key} takes a number, got {describe(raw)}")
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ControlError(f"/ddsp/{self.key} must be a finite number, got {raw}")
        if self.kind == "float":
            value: float | int = float(raw)
        else:
            if float(raw) != math.floor(float(raw)):
                raise ControlError(f"/ddsp/{self.key} takes a whole number, got {raw}")
            value = int(raw)
        if self.special is not None and value == self.special:
            return value
        if self.kind == "bool" and value not in (0, 1):
            raise ControlError(f"/ddsp/{self.key} takes 0 or 1, got {fmt(raw)}")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise ControlError(
                f"/ddsp/{self.key} value {fmt(raw)} is out of range [{fmt(self.low)}, "
                f"{fmt(self.high)}]"
            )
        return value


#: Every control, in the order ``/ddsp/status`` reports them (after ``input`` and ``checkpoint``).
SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("octave", "float", 0.0, -4.0, 4.0),
        Setting("confidence", "float", 0.2, 0.0, 1.0),
        Setting("loudness", "float", 0.0, -60.0, 60.0),
        Setting("adjust", "bool", 1, 0, 1),
        Setting("quiet", "float", 20.0, 0.0, 100.0),
        Setting("autotune", "float", 0.0, 0.0, 1.0),
        Setting("note_threshold", "float", 1.0, 0.0, 10.0),
        Setting("samplerate", "int", 0, 8000, 192000, special=0),
        Setting("normalize", "bool", 1, 0, 1),
        Setting("seed", "int", 0, 0, MAX_SEED),
        Setting("auto", "bool", 0, 0, 1, renders=False),
    )
}


@dataclass(frozen=True)
class RenderParams:
    """A snapshot of everything a render or a features file depends on."""

    input_path: Path | None
    checkpoint_path: Path | None
    octave: float
    confidence: float
    loudness: float
    adjust: bool
    quiet: float
    autotune: float
    note_threshold: float
    samplerate: int | None
    normalize: bool
    seed: int


@dataclass
class ModelInfo:
    """What the server knows of the loaded checkpoint."""

    name: str
    path: Path
    era: str
    sample_rate: int
    frame_rate: float


@dataclass
class ServerState:
    """The current settings. Not thread-safe: the caller holds the server's lock."""

    values: dict[str, float | int] = field(
        default_factory=lambda: {k: s.default for k, s in SETTINGS.items()}
    )
    input_path: Path | None = None
    model: ModelInfo | None = None

    def set(self, key: str, value: float | int) -> bool:
        """Store a coerced value; True if it differs from the current one."""
        changed = self.values[key] != value
        self.values[key] = value
        return changed

    @property
    def auto(self) -> bool:
        """Whether every change renders again by itself."""
        return bool(self.values["auto"])

    def params(self) -> RenderParams:
        """The render-relevant part of the state, frozen."""
        v = self.values
        return RenderParams(
            input_path=self.input_path,
            checkpoint_path=self.model.path if self.model else None,
            octave=float(v["octave"]),
            confidence=float(v["confidence"]),
            loudness=float(v["loudness"]),
            adjust=bool(v["adjust"]),
            quiet=float(v["quiet"]),
            autotune=float(v["autotune"]),
            note_threshold=float(v["note_threshold"]),
            samplerate=int(v["samplerate"]) or None,
            normalize=bool(v["normalize"]),
            seed=int(v["seed"]),
        )

    def osc_value(self, key: str) -> int | float | str:
        """One setting as it travels in ``/ddsp/state key value``."""
        if key == "input":
            return str(self.input_path) if self.input_path else ""
        if key == "checkpoint":
            return self.model.name if self.model else ""
        setting = SETTINGS[key]
        value = self.values[key]
        return float(value) if setting.kind == "float" else int(value)

    def status_items(self) -> list[tuple[str, int | float | str]]:
        """Every key with its OSC value, in the documented order."""
        keys = ["input", "checkpoint", *SETTINGS]
        return [(k, self.osc_value(k)) for k in keys]


def describe(raw: object) -> str:
    """A short description of an argument for error messages (never the whole of a huge one)."""
    if isinstance(raw, bool):
        return f"a boolean ({'T' if raw else 'F'})"
    if isinstance(raw, str):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        return f"the string {shown!r}"
    if isinstance(raw, (bytes, bytearray)):
        return f"a blob of {len(raw)} bytes"
    if raw is None:
        return "nil"
    if isinstance(raw, (int, float)):
        return f"the number {raw}"
    return f"a value of type {type(raw).__name__}"


def fmt(value: object) -> str:
    """A number without trailing zeros."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def truncate_utf8(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes on a character boundary, marking the cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (unencodable characters count as replaced)."""
    return len(text.encode("utf-8", "replace"))
