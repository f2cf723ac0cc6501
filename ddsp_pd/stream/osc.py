"""OSC for ``ddsp-pd live``: the controls of ``serve`` acting live, notes, and statistics.

Requests (UDP, numbers as int or float, as Pd sends them):

- ``/ddsp/hello port`` registers the sender for replies at ``port`` (as ``serve``);
  ``/ddsp/ping`` -> ``/ddsp/pong``; ``/ddsp/status`` -> one ``/ddsp/state key value`` per
  control, then ``/ddsp/state end 1``;
- ``/ddsp/octave``, ``/ddsp/confidence``, ``/ddsp/loudness``, ``/ddsp/adjust``,
  ``/ddsp/quiet``, ``/ddsp/autotune``, ``/ddsp/note_threshold``, ``/ddsp/seed``: as in
  ``serve`` (same ranges), acting from the next frame, ramped; answered with
  ``/ddsp/state key value``;
- ``/ddsp/note pitch velocity`` (velocity 0 = note off), ``/ddsp/bend amount`` (-1..1,
  +-2 semitones), ``/ddsp/adsr attack decay sustain release`` (seconds, level 0..1,
  seconds), ``/ddsp/portamento seconds``: MIDI mode (Pd's ``[notein]``, ``[bendin]``).

Replies: ``/ddsp/state``, ``/ddsp/error code message`` (to the sender), and every second
to each registered client ``/ddsp/live/stats rtf latency_ms dropouts`` (real-time factor
of the last second, input-to-output latency, dropouts since the start).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
from collections.abc import Callable
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from ddsp_pd.errors import ControlError, DdspPdError
from ddsp_pd.server.state import SETTINGS, OscError

__all__ = ["LIVE_SETTINGS", "LiveOscServer"]

log = logging.getLogger(__name__)

#: The ``serve`` settings that act live (the others concern files and renders).
LIVE_SETTINGS = ("octave", "confidence", "loudness", "adjust", "quiet", "autotune",
                 "note_threshold", "seed")  # fmt: skip
_MAX_CLIENTS = 16


def _number(address: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise OscError(f"{address} takes numbers, got {raw!r}")
    value = float(raw)
    if not math.isfinite(value):
        raise ControlError(f"{address} takes finite numbers, got {raw}")
    return value


def _message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, bool):
            arg = int(arg)
        builder.add_arg(arg)
    return builder.build().dgram


class LiveOscServer:
    """A UDP OSC server driving a :class:`~ddsp_pd.stream.engine.StreamEngine`.

    ``stats()`` returns ``(rtf, latency_ms, dropouts)`` for the statistics message.
    """

    def __init__(
        self,
        engine: Any,
        port: int,
        host: str = "127.0.0.1",
        stats: Callable[[], tuple[float, float, int]] | None = None,
        stats_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.stats = stats
        self.stats_interval = stats_interval
        self.values: dict[str, float | int] = {key: SETTINGS[key].default for key in LIVE_SETTINGS}
        controls = engine.controls.settings
        self.values.update(
            octave=controls.octave,
            confidence=controls.confidence,
            loudness=controls.loudness_db,
            adjust=int(controls.adjust),
            quiet=controls.quiet,
            autotune=controls.autotune,
            note_threshold=controls.note_threshold,
            seed=int(engine.settings.seed),
        )
        self.clients: dict[tuple[str, int], float] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, int(port)))
        except OSError as exc:
            self._sock.close()
            raise OscError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.received = 0
        self.errors = 0

    # ------------------------------------------------------------ lifetime
    def start(self) -> LiveOscServer:
        """Start receiving and sending statistics."""
        for target, name in ((self._serve, "ddsp-live-osc"), (self._report, "ddsp-live-stats")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both threads and close the socket."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._sock.close()

    # ------------------------------------------------------------ sending
    def _send(self, address: tuple[str, int], data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(data, address)

    def _report(self) -> None:
        while not self._stop.wait(self.stats_interval):
            if self.stats is None or not self.clients:
                continue
            rtf, latency_ms, dropouts = self.stats()
            data = _message("/ddsp/live/stats", float(rtf), float(latency_ms), int(dropouts))
            for client in list(self.clients):
                self._send(client, data)

    # ------------------------------------------------------------ receiving
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received += 1
            try:
                packet = OscPacket(data)
            except Exception:
                self._error(sender, "osc", "not an OSC datagram")
                continue
            for timed in packet.messages:
                message = timed.message
                try:
                    self.handle(message.address, list(message.params), sender)
                except DdspPdError as exc:
                    self._error(sender, exc.code, exc.message)
                except Exception as exc:  # a bug must not stop the server
                    log.exception("OSC handler failed")
                    self._error(sender, "internal", f"{type(exc).__name__}: {exc}")

    def _reply_to(self, sender: tuple[str, int]) -> tuple[str, int]:
        for client in self.clients:
            if client[0] == sender[0] and self.clients[client] == sender[1]:
                return client
        return sender

    def _error(self, sender: tuple[str, int], code: str, message: str) -> None:
        self.errors += 1
        self._send(self._reply_to(sender), _message("/ddsp/error", code, message[:900]))

    def handle(self, address: str, args: list[Any], sender: tuple[str, int]) -> None:
        """Act on one message (raises DdspPdError for bad ones)."""
        reply = self._reply_to(sender)

        def arity(n: int) -> None:
            if len(args) != n:
                raise OscError(f"{address} takes {n} argument(s), got {len(args)}")

        if address == "/ddsp/hello":
            arity(1)
            port = int(_number(address, args[0]))
            if not 1 <= port <= 65535:
                raise OscError(f"{address}: port {port} is out of range [1, 65535]")
            if len(self.clients) >= _MAX_CLIENTS and (sender[0], port) not in self.clients:
                raise DdspPdError("too many clients")
            self.clients[(sender[0], port)] = sender[1]
            self._send((sender[0], port), _message("/ddsp/ready", "live", self.engine.model.name))
        elif address == "/ddsp/ping":
            self._send(reply, _message("/ddsp/pong"))
        elif address == "/ddsp/status":
            for key in LIVE_SETTINGS:
                self._send(reply, _message("/ddsp/state", key, self._osc_value(key)))
            self._send(reply, _message("/ddsp/state", "end", 1))
        elif address.startswith("/ddsp/") and address[6:] in LIVE_SETTINGS:
            arity(1)
            key = address[6:]
            value = SETTINGS[key].coerce(args[0])
            self.engine.set_control(key, value)
            self.values[key] = value
            self._send(reply, _message("/ddsp/state", key, self._osc_value(key)))
        elif address == "/ddsp/note":
            arity(2)
            pitch, velocity = (_number(address, a) for a in args)
            self.engine.note_on(pitch, velocity)
        elif address == "/ddsp/bend":
            arity(1)
            self.engine.bend(_number(address, args[0]))
        elif address == "/ddsp/adsr":
            arity(4)
            self.engine.set_adsr(*(_number(address, a) for a in args))
        elif address == "/ddsp/portamento":
            arity(1)
            self.engine.set_control("portamento", _number(address, args[0]))
        else:
            raise OscError(f"unknown address {address} (ddsp-pd live)")

    def _osc_value(self, key: str) -> float | int:
        value = self.values[key]
        return float(value) if SETTINGS[key].kind == "float" else int(value)
