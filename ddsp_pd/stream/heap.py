"""Keep Python's garbage collector from pausing a live stream.

A full collection walks every tracked object in the process; with numba's compiler and the
loaded modules that is millions, and one took 83 ms in a 10-minute stream: 16 dropouts in a
row at block 256 (docs/performance.md). Objects that exist before a stream starts (modules,
kernels, models) live as long as the process, so :func:`settle_heap` moves them out of the
collector's sight (``gc.freeze``): later collections walk only what the stream itself makes.
The price: frozen objects that later form unreachable cycles are not reclaimed (those
without cycles are freed as always, by their reference counts).
"""

from __future__ import annotations

import gc
import threading

__all__ = ["settle_heap"]

_lock = threading.Lock()
_settled = False


def settle_heap() -> None:
    """Before a stream: the first time in a process, collect (so that no garbage is kept)
    and freeze every live object; later, only freeze what came since (a collection then
    could pause streams already playing)."""
    global _settled
    with _lock:
        if not _settled:
            gc.collect()
            _settled = True
        gc.freeze()
