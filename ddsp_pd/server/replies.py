"""Sending replies: OSC encoding with only ``i f s`` arguments, and a paced sender thread.

Every reply leaves from the server's own socket, so a client that ``connect()``-ed its UDP
socket to the server (Pd's ``[netsend -u]`` does) accepts it. Replies are queued and sent by
one thread in order; a token bucket spaces out bursts so that Pd's receive buffer, which Pd
empties only every few milliseconds, never overflows.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
from dataclasses import dataclass

from pythonosc.osc_message_builder import OscMessageBuilder

from ddsp_pd.server.state import MAX_STRING_BYTES, truncate_utf8

log = logging.getLogger(__name__)

Target = tuple[str, int]
Arg = int | float | str

_INT32 = (-(2**31), 2**31 - 1)
#: Reply datagrams stay far below UDP's 64 KB; this is a hard ceiling checked on every send.
MAX_DATAGRAM = 2048


def encode(address: str, args: tuple[object, ...]) -> bytes:
    """Build one OSC message with only int, float and string arguments.

    Bools become ints (Pd cannot read ``T``/``F``), numpy scalars become Python numbers, ints
    outside 32 bits become floats, non-finite floats become 0.0, and strings are cut to
    :data:`MAX_STRING_BYTES`.
    """
    builder = OscMessageBuilder(address=address)
    for arg in args:
        if isinstance(arg, str):
            builder.add_arg(truncate_utf8(arg, MAX_STRING_BYTES), OscMessageBuilder.ARG_TYPE_STRING)
            continue
        if hasattr(arg, "item") and not isinstance(arg, (int, float)):
            arg = arg.item()  # numpy scalar
        if isinstance(arg, bool):
            arg = int(arg)
        if isinstance(arg, int) and _INT32[0] <= arg <= _INT32[1]:
            builder.add_arg(arg, OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(arg, (int, float)):
            value = float(arg) if math.isfinite(float(arg)) else 0.0
            builder.add_arg(value, OscMessageBuilder.ARG_TYPE_FLOAT)
        else:
            builder.add_arg(truncate_utf8(str(arg)), OscMessageBuilder.ARG_TYPE_STRING)
    data = builder.build().dgram
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"reply {address} would be {len(data)} bytes")
    return data


@dataclass
class _Item:
    target: Target
    data: bytes
    pause: float


class ReplySender:
    """Sends queued replies from one thread, at most ``burst`` back to back, then ``rate``/s."""

    def __init__(self, sock: socket.socket, rate: float = 2000.0, burst: int = 100) -> None:
        self._sock = sock
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ddsp-osc-replies", daemon=True)
        self.sent = 0

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def send(self, target: Target, address: str, *args: Arg, pause: float = 0.0) -> None:
        """Queue one reply; ``pause`` seconds of silence follow it (for long lists)."""
        try:
            data = encode(address, args)
        except (ValueError, OverflowError, TypeError) as exc:
            log.error("cannot encode reply %s: %s", address, exc)
            return
        self._queue.put(_Item(target, data, pause))

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then end the thread."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take_token(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            time.sleep((1.0 - self._tokens) / self._rate)
            self._tokens = 1.0
            self._last = time.monotonic()
        self._tokens -= 1.0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._take_token()
            try:
                self._sock.sendto(item.data, item.target)
                self.sent += 1
            except OSError as exc:
                # A vanished client must not stop the server; the next hello fixes the target.
                log.warning("cannot send a reply to %s:%s: %s", item.target[0], item.target[1], exc)
            if item.pause > 0:
                time.sleep(item.pause)
