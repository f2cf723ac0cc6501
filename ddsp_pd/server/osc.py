"""Datagrams in: decoding, the address table, argument checking, and errors out.

Every datagram either reaches a handler with arguments of the documented types or produces
``/ddsp/error``; nothing a client sends can stop the receiving thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pythonosc.osc_packet import OscPacket

from ddsp_pd.server.handlers import Handlers
from ddsp_pd.server.replies import Target
from ddsp_pd.server.state import SETTINGS, OscError, Setting, describe, fmt
from ddsp_pd.server.streams import (
    BLOCK_ADDRESS,
    BLOCK_PREFIX,
    StreamService,
    as_block_size,
    as_mode,
    as_number,
    as_rate,
    as_samples,
    as_seq,
    as_stream_error,
    as_stream_id,
    decode_block,
    is_stream_address,
)

log = logging.getLogger(__name__)

Converter = Callable[[str, object], Any]
#: Argument types the server takes: Pd's i, f, s, and the 64-bit numbers other clients send.
ACCEPTED_TAGS = frozenset("ifsdh")


def as_port(address: str, raw: object) -> int:
    """A UDP port number, as an int or an integral float."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise OscError(f"{address} takes a port number, got {describe(raw)}")
    if isinstance(raw, float) and (not math.isfinite(raw) or raw != int(raw)):
        raise OscError(f"{address} takes a whole port number, got {raw}")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise OscError(f"{address}: port {fmt(raw)} is out of range [1, 65535]")
    return port


def as_text(address: str, raw: object) -> str:
    """A string argument (Pd sends symbols as OSC strings)."""
    if not isinstance(raw, str):
        raise OscError(f"{address} takes a string, got {describe(raw)}")
    return raw


def _setting_converter(setting: Setting) -> Converter:
    return lambda address, raw: setting.coerce(raw)


@dataclass(frozen=True)
class Route:
    """One address: the converters of its arguments and the handler they go to."""

    converters: tuple[Converter, ...]
    handler: Callable[..., None]
    #: Takes every argument after ``converters`` as one list (then there may be any number).
    rest: Callable[[str, list[Any]], Any] | None = None


def build_routes(handlers: Handlers) -> dict[str, Route]:
    """The whole request namespace of docs/osc.md."""
    h = handlers
    routes = {
        "/ddsp/hello": Route((as_port,), h.hello),
        "/ddsp/ping": Route((), h.ping),
        "/ddsp/status": Route((), h.status),
        "/ddsp/input": Route((as_text,), h.set_input),
        "/ddsp/checkpoint": Route((as_text,), h.choose_checkpoint),
        "/ddsp/checkpoints": Route((), h.list_checkpoints),
        "/ddsp/render": Route((), h.render),
        "/ddsp/cancel": Route((), h.cancel),
        "/ddsp/features": Route((), h.features),
    }
    for key, setting in SETTINGS.items():

        def set_control(sender: Target, value: float | int, key: str = key) -> None:
            h.set_control(sender, key, value)

        routes[f"/ddsp/{key}"] = Route((_setting_converter(setting),), set_control)
    if h.streams is not None:
        routes.update(stream_routes(h.streams))
    return routes


def stream_routes(streams: StreamService) -> dict[str, Route]:
    """The ``/ddsp/stream/*`` namespace and ``/ddsp/note`` (docs/osc.md, "Streams")."""
    n = as_number
    return {
        "/ddsp/stream/open": Route((as_stream_id, as_block_size, as_rate, as_mode), streams.open),
        BLOCK_ADDRESS: Route((as_stream_id, as_seq), streams.block, rest=as_samples),
        "/ddsp/stream/close": Route((as_stream_id,), streams.close),
        "/ddsp/stream/note": Route((as_stream_id, n, n), streams.note),
        "/ddsp/stream/bend": Route((as_stream_id, n), streams.bend),
        "/ddsp/stream/adsr": Route((as_stream_id, n, n, n, n), streams.adsr),
        "/ddsp/note": Route((n, n), streams.note_all),
    }


def _short_address(address: str) -> str:
    return address if len(address) <= 60 else address[:60] + "..."


class Dispatcher:
    """Decodes each datagram and calls the handler of each message in it.

    Has python-osc's ``call_handlers_for_packet`` signature, so python-osc's UDP servers can
    drive it; it sends its own replies and returns nothing for python-osc to send.
    """

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.routes = build_routes(handlers)
        self.received = 0

    def call_handlers_for_packet(self, data: bytes, client_address: Target) -> list[Any]:
        """Handle one datagram from ``client_address``; never raises."""
        self.received += 1
        sender = (str(client_address[0]), int(client_address[1]))
        if self.handlers.is_own(sender):
            # Our own reply came back: answering it would start an endless loop.
            log.debug("ignored a datagram from the server's own address")
            return []
        self.handlers.touch(sender)
        if data.startswith(BLOCK_PREFIX):
            # Audio blocks come hundreds a second: decoded with numpy, not argument by argument.
            block = decode_block(data)
            if block is not None:
                self.handle_block(sender, *block)
                return []
        try:
            messages = decode(data)
        except OscError as exc:
            self.handlers.error(self.handlers.target_for(sender), exc)
            return []
        for address, tags, args in messages:
            self.handle(sender, address, args, tags)
        return []

    def handle(self, sender: Target, address: str, args: list[Any], tags: str = "") -> None:
        """Check one message against its route and run the handler; errors become replies."""
        try:
            route = self.routes.get(address)
            if route is None:
                raise OscError(f"unknown address {_short_address(address)}")
            refused = sorted(set(tags) - ACCEPTED_TAGS)
            if refused:
                raise OscError(
                    f"{address}: argument type(s) {''.join(refused)!r} not accepted "
                    "(send int, float or string)"
                )
            fixed = len(route.converters)
            if len(args) != fixed and (route.rest is None or len(args) < fixed):
                raise OscError(f"{address} takes {fixed} argument(s), got {len(args)}")
            values = [
                conv(address, raw) for conv, raw in zip(route.converters, args[:fixed], strict=True)
            ]
            if route.rest is not None:
                values.append(route.rest(address, args[fixed:]))
            log.debug("%s %.200s from %s:%s", address, values, *sender)
            route.handler(sender, *values)
        except Exception as exc:
            self._fail(sender, address, exc)

    def handle_block(self, sender: Target, ident: float, seq: float, samples: Any) -> None:
        """A ``/ddsp/stream/block`` decoded by :func:`decode_block`; errors become replies."""
        try:
            route = self.routes.get(BLOCK_ADDRESS)
            if route is None:
                raise OscError(f"unknown address {BLOCK_ADDRESS}")
            route.handler(
                sender, as_stream_id(BLOCK_ADDRESS, ident), as_seq(BLOCK_ADDRESS, seq), samples
            )
        except Exception as exc:
            self._fail(sender, BLOCK_ADDRESS, exc)

    def _fail(self, sender: Target, address: str, exc: Exception) -> None:
        if self.handlers.streams is not None and is_stream_address(address):
            # A stream's replies, errors included, go to the socket it sends from.
            self.handlers.error(sender, as_stream_error(exc))
        else:
            self.handlers.error(self.handlers.target_for(sender), exc)


def type_tags(dgram: bytes) -> str:
    """The type tags of one encoded OSC message, without the leading comma ('' if none)."""
    end = dgram.find(b"\0")
    start = (end // 4 + 1) * 4
    if end < 0 or dgram[start : start + 1] != b",":
        return ""
    stop = dgram.find(b"\0", start)
    return dgram[start + 1 : stop if stop >= 0 else len(dgram)].decode("ascii", "replace")


def decode(data: bytes) -> list[tuple[str, str, list[Any]]]:
    """The messages of one datagram as (address, type tags, arguments); bundles unpacked,
    timetags ignored.

    Raises:
        OscError: the datagram is not OSC.
    """
    try:
        packet = OscPacket(data)
        return [
            (m.message.address, type_tags(m.message.dgram), list(m.message.params))
            for m in packet.messages
        ]
    except Exception as exc:
        # python-osc raises ParseError for most junk but other types for some; all mean "not OSC".
        log.debug("undecodable datagram of %d bytes (%s)", len(data), type(exc).__name__)
        raise OscError(f"undecodable datagram of {len(data)} bytes (not an OSC message)") from exc
