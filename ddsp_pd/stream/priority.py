"""Real-time scheduling for the threads that must keep time (where the system allows it).

An audio thread that waits behind a compile job, a browser or a test suite misses its
deadline however fast its own work is: on the 2-core test machine most dropouts of a quiet
10-minute run came from the worker or the clock thread being off the CPU for 10-16 ms, not
from slow blocks. Audio software asks the kernel for a real-time policy for such threads
(JACK, PipeWire and DAWs do, with ``rtprio`` granted in ``/etc/security/limits.conf`` or by
running as root); :func:`request_realtime` asks for ``SCHED_FIFO`` at a low priority for
the calling thread and quietly keeps the normal policy where that is not allowed.

A real-time thread that never sleeps could starve the rest of the system; ours wait on a
queue between blocks, and Linux keeps 5 % of every second for normal threads anyway
(``kernel.sched_rt_runtime_us``).
"""

from __future__ import annotations

import logging
import os

__all__ = ["REALTIME_PRIORITY", "request_realtime"]

log = logging.getLogger(__name__)

#: SCHED_FIFO priority asked for: low (1..99), below JACK's own threads (typically 70+).
REALTIME_PRIORITY = 10


def request_realtime(priority: int = REALTIME_PRIORITY) -> bool:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority``; True if it worked.

    Refused (no permission, no such policy on this system, the variable
    ``DDSP_PD_NO_REALTIME`` set): False, nothing changed, logged at debug level.
    """
    if os.environ.get("DDSP_PD_NO_REALTIME"):
        return False
    setter = getattr(os, "sched_setscheduler", None)
    policy = getattr(os, "SCHED_FIFO", None)
    if setter is None or policy is None:
        return False
    try:
        # pid 0 is the calling thread on Linux (a thread is a task of its own there).
        setter(0, policy, os.sched_param(priority))
    except (OSError, ValueError) as exc:
        log.debug("real-time scheduling refused (%s); the normal policy stays", exc)
        return False
    return True
