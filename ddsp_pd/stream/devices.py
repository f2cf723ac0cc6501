"""Audio devices through PortAudio (``sounddevice``): listing, choosing, and the stream.

Any PortAudio device works, JACK included: with a JACK server running, PortAudio lists
its ``system`` device and the stream's ports (``PortAudio:in_1``, ``PortAudio:out_1``) can
be wired to Pd's with ``jack_connect`` or a patchbay. ``sounddevice`` is imported only
here and only when a device is used, so nothing else pays for PortAudio (and a JACK server
started after the import would not be seen: PortAudio scans its host APIs once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddsp_pd.errors import DdspPdError

__all__ = ["DeviceError", "DeviceStream", "device_lines", "resolve_device"]


class DeviceError(DdspPdError):
    """An audio device is missing, unknown, busy, or refuses the settings."""

    code = "device"


def _sd() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise DeviceError(
            f"audio devices need PortAudio and the sounddevice package ({reason}); "
            "on Debian: apt-get install libportaudio2"
        ) from exc
    return sounddevice


def device_lines() -> list[str]:
    """One line per PortAudio device: index, name, host API, channels, default rate."""
    sd = _sd()
    devices = sd.query_devices()
    apis = sd.query_hostapis()
    if len(devices) == 0:
        return ["no audio devices (PortAudio found none; is a sound server such as JACK up?)"]
    try:
        default_in, default_out = sd.default.device
    except Exception:  # pragma: no cover - depends on PortAudio
        default_in = default_out = -1
    lines = []
    for index, dev in enumerate(devices):
        marks = ("<" if index == default_in else " ") + (">" if index == default_out else " ")
        api = apis[dev["hostapi"]]["name"]
        lines.append(
            f"{marks} {index:3d} {dev['name']} ({api}): {dev['max_input_channels']} in, "
            f"{dev['max_output_channels']} out, {dev['default_samplerate']:g} Hz"
        )
    lines.append("< default input, > default output")
    return lines


def resolve_device(spec: str | int | None, kind: str) -> int:
    """The index of a device given by index, by (part of) its name, or None (the default).

    ``kind`` is ``"input"`` or ``"output"``: the device must have such channels.
    Raises :class:`DeviceError` with one line.
    """
    sd = _sd()
    devices = list(sd.query_devices())
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    if spec is None or str(spec) == "":
        try:
            index = sd.default.device[0 if kind == "input" else 1]
        except Exception:  # pragma: no cover - depends on PortAudio
            index = -1
        if index is None or index < 0 or index >= len(devices):
            raise DeviceError(f"no default {kind} device (ddsp-pd live --list-devices shows them)")
        return int(index)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(devices):
            raise DeviceError(f"no audio device {index} (ddsp-pd live --list-devices shows them)")
    else:
        matches = [i for i, d in enumerate(devices) if text.lower() in d["name"].lower()]
        with_channels = [i for i in matches if devices[i][channels] > 0]
        if not matches:
            raise DeviceError(
                f"no audio device named like {text!r} (ddsp-pd live --list-devices shows them)"
            )
        if not with_channels:
            raise DeviceError(f"audio device {text!r} has no {kind} channels")
        index = with_channels[0]
    if devices[index][channels] < 1:
        raise DeviceError(f"audio device {index} ({devices[index]['name']}) has no {kind} channels")
    return index


def _check(sd: Any, device: int, kind: str, rate: int) -> None:
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, channels=1, dtype="float32", samplerate=rate)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        name = sd.query_devices(device)["name"]
        raise DeviceError(f"{kind} device {device} ({name}) refuses {rate} Hz: {reason}") from exc


def _fit(block: np.ndarray, frames: int) -> np.ndarray:
    """``block`` cut or padded with silence to ``frames`` samples (never fail a callback)."""
    if block.shape[0] == frames:
        return block
    out = np.zeros(frames, np.float32)
    out[: min(frames, block.shape[0])] = block[:frames]
    return out


@dataclass
class DeviceStats:
    """What PortAudio reported: callbacks and their xrun flags."""

    callbacks: int = 0
    input_overflows: int = 0
    output_underflows: int = 0


class DeviceStream:
    """A PortAudio stream whose callback calls ``process(block) -> block`` (mono).

    ``input_device`` None with ``output_only`` makes an output stream (MIDI mode without
    audio in); otherwise a duplex stream, the input mixed to mono and the output copied to
    every output channel.
    """

    def __init__(
        self,
        process: Callable[[np.ndarray], np.ndarray],
        sample_rate: int,
        block: int,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        output_only: bool = False,
    ) -> None:
        sd = _sd()
        self._sd = sd
        self.process = process
        self.sample_rate = int(sample_rate)
        self.block = int(block)
        self.output = resolve_device(output_device, "output")
        self.input = None if output_only else resolve_device(input_device, "input")
        _check(sd, self.output, "output", self.sample_rate)
        if self.input is not None:
            _check(sd, self.input, "input", self.sample_rate)
        out_channels = min(2, int(sd.query_devices(self.output)["max_output_channels"]))
        self.out_channels = max(1, out_channels)
        self.stats = DeviceStats()
        self._stream: Any = None
        self._finished = threading.Event()

    def _flags(self, status: Any) -> None:
        if status.input_overflow:
            self.stats.input_overflows += 1
        if status.output_underflow:
            self.stats.output_underflows += 1

    def _duplex(self, indata: Any, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        self.stats.callbacks += 1
        if status:
            self._flags(status)
        mono = indata[:, 0] if indata.shape[1] == 1 else indata.mean(axis=1)
        outdata[:] = _fit(self.process(mono), frames)[:, None]

    def _output(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        self.stats.callbacks += 1
        if status:
            self._flags(status)
        outdata[:] = _fit(self.process(np.zeros(frames, np.float32)), frames)[:, None]

    def start(self) -> DeviceStream:
        """Open and start the stream (DeviceError with one line if PortAudio refuses)."""
        sd = self._sd
        try:
            if self.input is None:
                self._stream = sd.OutputStream(
                    samplerate=self.sample_rate,
                    blocksize=self.block,
                    device=self.output,
                    channels=self.out_channels,
                    dtype="float32",
                    callback=self._output,
                )
            else:
                self._stream = sd.Stream(
                    samplerate=self.sample_rate,
                    blocksize=self.block,
                    device=(self.input, self.output),
                    channels=(1, self.out_channels),
                    dtype="float32",
                    callback=self._duplex,
                )
            self._stream.start()
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise DeviceError(f"cannot open the audio stream: {reason}") from exc
        return self

    def stop(self) -> None:
        """Stop and close the stream."""
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None

    def run(self, duration: float | None, should_stop: Callable[[], bool]) -> None:
        """Keep the stream running until ``duration`` seconds passed or ``should_stop()``."""
        started = time.monotonic()
        while not should_stop():
            if duration is not None and time.monotonic() - started >= duration:
                return
            if self._stream is not None and not self._stream.active:
                raise DeviceError("the audio stream stopped (device removed or server gone?)")
            time.sleep(0.05)
