"""Keep Python's garbage collector from pausing a live stream.

A full collection walks every tracked object in the process; with numba's compiler and the
loaded modules that is millions, and one took 83 ms in a 10-minute stream: 17 dropouts in a
row at block 256 (docs/performance.md). Objects that exist before a stream starts (modules,
kernels, models) live as long as the process, so :func:`settle_heap` moves them out of the
collector's sight (``gc.freeze``): later collections walk only what the stream itself makes.
Frozen objects that become unreachable cycles are not reclaimed while frozen (those without
cycles are freed as always, by their reference counts), so whenever no stream is playing a
new one starts with a full pass over everything, frozen or not.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["settle_heap"]

_lock = threading.Lock()


def settle_heap(full: bool) -> None:
    """Before a stream: freeze every live object. ``full`` (no other stream is playing, so
    a pause costs nothing): first unfreeze and collect everything, so that no garbage stays
    frozen. Without ``full`` only what came since is frozen: a collection then could pause
    the streams already playing."""
    with _lock:
        if full:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
