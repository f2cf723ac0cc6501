"""Sending replies: OSC encoding with only ``i f s`` arguments, and a paced sender thread.

Every reply leaves from the server's own socket, so a client that ``connect()``-ed its UDP
socket to the server (Pd's ``[netsend -u]`` does) accepts it. Replies are queued per target
and sent by one thread, in order for each target, the targets taking turns; a token bucket per
target spaces out bursts so that Pd's receive buffer, which Pd empties only every few
milliseconds, never overflows.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pythonosc.osc_message_builder import OscMessageBuilder

from ddsp_pd.server.pacing import DropCounter, TokenBucket
from ddsp_pd.server.state import MAX_STRING_BYTES, truncate_utf8

log = logging.getLogger(__name__)

Target = tuple[str, int]
Arg = int | float | str

_INT32 = (-(2**31), 2**31 - 1)
#: Reply datagrams stay far below UDP's 64 KB; this is a hard ceiling checked on every send.
MAX_DATAGRAM = 2048
#: Replies waiting for one target at most (a checkpoint list is one per checkpoint).
MAX_QUEUED = 10_000
#: Targets whose pacing is remembered before idle ones are forgotten.
MAX_IDLE_LANES = 1024
#: sendto flag that makes a full socket buffer fail at once instead of waiting (0 where absent).
_NO_WAIT = getattr(socket, "MSG_DONTWAIT", 0)


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
    data: bytes
    pause: float


@dataclass
class _Lane:
    """The replies waiting for one target, and that target's pacing."""

    bucket: TokenBucket
    items: deque[_Item] = field(default_factory=deque)
    not_before: float = 0.0


class ReplySender:
    """Sends queued replies from one thread; each target gets at most ``burst`` back to back,
    then ``rate`` per second.

    Targets take turns (round robin), so a client that asked for thousands of replies delays
    nobody else; replies to one target keep their order. At most ``max_queued`` replies wait
    per target; more are dropped and counted (:attr:`dropped`).
    """

    def __init__(
        self,
        sock: socket.socket,
        rate: float = 2000.0,
        burst: int = 100,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        if rate <= 0 or burst < 1 or max_queued < 1:
            raise ValueError(f"bad reply pacing: rate {rate}, burst {burst}, queue {max_queued}")
        self._sock = sock
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_queued = max_queued
        self._cond = threading.Condition()
        self._lanes: dict[Target, _Lane] = {}
        #: targets with waiting replies, in turn order
        self._turns: deque[Target] = deque()
        self._stopping = False
        self._abandon = False
        self._thread = threading.Thread(target=self._run, name="ddsp-osc-replies", daemon=True)
        self.sent = 0
        #: Datagrams sent by :meth:`send_now` (the stream worker's only).
        self.sent_now = 0
        self.dropped = DropCounter(log, "replies to a client with a full queue")

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def send(self, target: Target, address: str, *args: Arg, pause: float = 0.0) -> None:
        """Queue one reply; ``pause`` seconds of silence to that target follow it (long lists)."""
        try:
            data = encode(address, args)
        except (ValueError, OverflowError, TypeError) as exc:
            log.error("cannot encode reply %s: %s", address, exc)
            return
        with self._cond:
            lane = self._lanes.get(target)
            if lane is None:
                if len(self._lanes) >= MAX_IDLE_LANES:
                    self._forget_idle_lanes(time.monotonic())
                lane = self._lanes[target] = _Lane(
                    TokenBucket(self._rate, self._burst, time.monotonic())
                )
            if len(lane.items) >= self._max_queued:
                full = True
            else:
                full = False
                if not lane.items:
                    self._turns.append(target)
                lane.items.append(_Item(data, pause))
                self._cond.notify()
        if full:
            self.dropped.drop(f"{target[0]}:{target[1]}")

    def send_now(self, target: Target, data: bytes) -> bool:
        """Send one encoded datagram at once from the calling thread, past the queue and the
        pacing (the audio of live streams, hundreds per second); never waits: when the
        socket's buffer is full the datagram is dropped and counted. True if it was sent."""
        try:
            self._sock.sendto(data, _NO_WAIT, target)
        except OSError as exc:
            # A full buffer (BlockingIOError) or a vanished client: the stream goes on.
            log.debug("cannot send a stream reply to %s:%s: %s", target[0], target[1], exc)
            self.dropped.drop(f"{target[0]}:{target[1]}")
            return False
        self.sent_now += 1
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            self._abandon = True
            self._cond.notify_all()

    def _forget_idle_lanes(self, now: float) -> None:
        # An idle lane whose bucket is full is the same as a new one.
        for target in [
            t
            for t, lane in self._lanes.items()
            if not lane.items and lane.not_before <= now and lane.bucket.is_full(now)
        ]:
            del self._lanes[target]

    def _next(self) -> tuple[Target, _Item] | None:
        """The next reply whose target may receive now; waits for one (lock held)."""
        while not self._abandon:
            now = time.monotonic()
            wake = math.inf
            for target in self._turns:
                lane = self._lanes[target]
                ready = max(lane.not_before, lane.bucket.ready_at(now))
                if ready <= now:
                    lane.bucket.take(now)
                    item = lane.items.popleft()
                    lane.not_before = now + item.pause
                    self._turns.remove(target)
                    if lane.items:
                        self._turns.append(target)
                    return target, item
                wake = min(wake, ready)
            if not self._turns and self._stopping:
                return None
            self._cond.wait(None if math.isinf(wake) else wake - now)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
            if picked is None:
                return
            target, item = picked
            try:
                self._sock.sendto(item.data, target)
                self.sent += 1
            except OSError as exc:
                # A vanished client must not stop the server; the next hello fixes the target.
                log.warning("cannot send a reply to %s:%s: %s", target[0], target[1], exc)
