"""Rate limits: a token bucket, and a counter of dropped things that logs at most now and then.

The reply sender paces each client with a bucket; the error limiter gives each sender one; the
sender filter and the error limiter count what they drop with :class:`DropCounter`, so a flood
is visible in the log without the log itself becoming a flood.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

#: Seconds between two log lines of one :class:`DropCounter`.
REPORT_INTERVAL_S = 10.0


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; every event takes one.

    Not thread-safe: the owner holds its own lock. Times are passed in (``now``), so tests
    can drive a bucket with a fake clock.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate >= 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)

    def take(self, now: float) -> bool:
        """Take one token if there is one; False (and nothing taken) if not."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When the next token is there (``now`` if it is already; inf if it never comes)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        if self.rate <= 0:
            return math.inf
        return now + (1.0 - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (it then equals a fresh one)."""
        self._refill(now)
        return self.tokens >= self.burst


class DropCounter:
    """Counts dropped items; logs the first drop at once, then at most one line per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = REPORT_INTERVAL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_report = -math.inf
        self._pending = 0
        self.total = 0

    def drop(self, detail: str) -> None:
        """Count one dropped item; ``detail`` (e.g. the sender) is logged with the count."""
        with self._lock:
            self.total += 1
            self._pending += 1
            now = self._clock()
            if now - self._last_report < self._interval:
                return
            pending, total = self._pending, self.total
            self._pending = 0
            self._last_report = now
        self._log.warning(
            "dropped %d %s (%d in all; the last from %s); more are only counted for %.0f s",
            pending,
            self._what,
            total,
            detail,
            self._interval,
        )
