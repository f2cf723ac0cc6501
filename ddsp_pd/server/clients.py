"""Who hears what: the registered clients, where a sender's replies go, and error limits.

A client registers with ``/ddsp/hello PORT`` and is identified by (its host, PORT). The socket
the hello came from (its *source*; Pd sends from ``[netsend]``'s socket and listens on another)
is mapped to the client, so every later request from that socket is answered at PORT, and every
datagram from it keeps the client alive. Clients that send nothing for ``timeout`` seconds are
forgotten; a sender that never said hello is answered at its source address.

The table is used by the receiving thread and the worker thread, so it has its own lock; it
never calls out while holding it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ddsp_pd.errors import DdspPdError
from ddsp_pd.server.pacing import Clock, DropCounter, TokenBucket

log = logging.getLogger(__name__)

Target = tuple[str, int]

#: Registered clients at most; one more hello is answered ``/ddsp/error busy``.
DEFAULT_MAX_CLIENTS = 16
#: Seconds without a datagram after which a client is forgotten (Pd pings every second).
DEFAULT_CLIENT_TIMEOUT = 30.0
#: Source sockets remembered per client (Pd opens a new one at every reconnect).
MAX_SOURCES_PER_CLIENT = 8
#: ``/ddsp/error`` replies a sender may get back to back, then per second.
DEFAULT_ERROR_BURST = 100
DEFAULT_ERROR_RATE = 20.0
#: Errors per second (and back to back) shared by all senders that are not clients, so that
#: many sockets together cannot make the server send more than this.
SHARED_ERROR_RATE = 200.0
SHARED_ERROR_BURST = 500
#: Senders whose error bucket is remembered; the least recently used one is forgotten first.
MAX_LIMITED_SENDERS = 1024


class BusyError(DdspPdError):
    """The server cannot take this request now (e.g. too many registered clients)."""

    code = "busy"


@dataclass
class Client:
    """One registered client: where it listens, when it last sent, which sockets it sends from."""

    target: Target
    last_seen: float
    sources: OrderedDict[Target, None] = field(default_factory=OrderedDict)


class ClientTable:
    """The registered clients and the mapping from source sockets to them."""

    def __init__(
        self,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        timeout: float = DEFAULT_CLIENT_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_clients < 1 or timeout <= 0:
            raise ValueError(f"bad client limits: max {max_clients}, timeout {timeout}")
        self.max_clients = max_clients
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[Target, Client] = {}
        self._by_source: dict[Target, Target] = {}

    # --- changes ----------------------------------------------------------------------------
    def hello(self, source: Target, port: int) -> Target:
        """Register (or refresh) the client (source host, ``port``) for ``source``; its target.

        A source that said hello with another port before moves to the new client; a client
        left without sources is forgotten.

        Raises:
            BusyError: the table is full (nothing changes then).
        """
        key = (source[0], int(port))
        with self._lock:
            now = self._clock()
            self._expire(now)
            old = self._by_source.get(source)
            if key not in self._clients:
                freed = old in self._clients and list(self._clients[old].sources) == [source]
                if len(self._clients) - int(freed) >= self.max_clients:
                    raise BusyError(
                        f"/ddsp/hello: too many clients ({self.max_clients}); the others "
                        f"are forgotten {self.timeout:g} s after their last message"
                    )
            if old is not None and old != key:
                self._detach(source, old)
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = Client(key, now)
                log.debug("client %s:%d registered", *key)
            client.last_seen = now
            client.sources.pop(source, None)
            client.sources[source] = None
            self._by_source[source] = key
            while len(client.sources) > MAX_SOURCES_PER_CLIENT:
                oldest, _ = client.sources.popitem(last=False)
                self._by_source.pop(oldest, None)
            return key

    def seen(self, source: Target) -> None:
        """A datagram came from ``source``: keep its client (if any) alive."""
        with self._lock:
            now = self._clock()
            client = self._live_client(source, now)
            if client is not None:
                client.last_seen = now

    # --- questions --------------------------------------------------------------------------
    def target_for(self, source: Target) -> Target:
        """Where replies to ``source`` go: its client's hello port, else ``source`` itself."""
        with self._lock:
            client = self._live_client(source, self._clock())
            return client.target if client is not None else source

    def is_client(self, target: Target) -> bool:
        """Whether ``target`` is a registered client's hello address."""
        with self._lock:
            client = self._clients.get(target)
            return client is not None and not self._stale(client, self._clock())

    def recipients(self, requester: Target | None = None) -> list[Target]:
        """Every registered client, plus ``requester`` (a reply target) if it is not one."""
        with self._lock:
            self._expire(self._clock())
            targets = list(self._clients)
        if requester is not None and requester not in targets:
            targets.append(requester)
        return targets

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._clients)

    # --- internals (lock held) --------------------------------------------------------------
    def _stale(self, client: Client, now: float) -> bool:
        return now - client.last_seen > self.timeout

    def _live_client(self, source: Target, now: float) -> Client | None:
        key = self._by_source.get(source)
        if key is None:
            return None
        client = self._clients.get(key)
        if client is None:
            self._by_source.pop(source, None)
            return None
        if self._stale(client, now):
            self._remove(key)
            return None
        return client

    def _expire(self, now: float) -> None:
        for key in [k for k, c in self._clients.items() if self._stale(c, now)]:
            self._remove(key)

    def _remove(self, key: Target) -> None:
        client = self._clients.pop(key, None)
        if client is None:
            return
        for source in client.sources:
            if self._by_source.get(source) == key:
                del self._by_source[source]
        log.debug("client %s:%d forgotten", *key)

    def _detach(self, source: Target, key: Target) -> None:
        client = self._clients.get(key)
        self._by_source.pop(source, None)
        if client is None:
            return
        client.sources.pop(source, None)
        if not client.sources:
            del self._clients[key]


class ErrorLimiter:
    """Per-sender token buckets for ``/ddsp/error``; what exceeds them is dropped and counted.

    Registered clients have their own bucket only; every other sender also draws from one
    shared bucket, so a flood from many sockets stays bounded as a whole.
    """

    def __init__(
        self,
        rate: float = DEFAULT_ERROR_RATE,
        burst: float = DEFAULT_ERROR_BURST,
        shared_rate: float = SHARED_ERROR_RATE,
        shared_burst: float = SHARED_ERROR_BURST,
        clock: Clock = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Target, TokenBucket] = OrderedDict()
        self._shared = TokenBucket(shared_rate, max(shared_burst, burst), clock())
        self.dropped = DropCounter(log, "error replies over the rate limit", clock=clock)

    def allow(self, target: Target, registered: bool = False) -> bool:
        """Whether one more error may go to ``target``; if not, it is counted as dropped."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(target, None)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.burst, now)
                while len(self._buckets) >= MAX_LIMITED_SENDERS:
                    self._buckets.popitem(last=False)
            self._buckets[target] = bucket
            allowed = bucket.take(now) and (registered or self._shared.take(now))
        if not allowed:
            self.dropped.drop(f"{target[0]}:{target[1]}")
        return allowed
