"""How often this machine stops a thread that only sleeps: the floor under any dropout count.

A live audio path can only be as steady as the machine under it. This probe asks for 1 ms
sleeps in a loop (on a real-time thread where allowed, as the live workers are) for
``--minutes`` and counts the wake-ups that came more than 5, 10, 20 and 40 ms late. On a
virtual machine such stalls come from the host (steal time) and no process inside can avoid
them; a stall longer than a live path's slack is a dropout whatever the engine does. Run it
beside a live benchmark, or alone on a quiet machine:

    python benchmarks/bench_hiccups.py [--minutes 10] [--no-realtime]
    python benchmarks/bench_hiccups.py --period-ms 5.333 --slack-ms 10.7   # a block clock

``--period-ms`` paces the loop like a device's callback instead: it sleeps until each
period is due (absolute deadlines, so a late wake is followed by a catch-up, as in
``ddsp-pd live --file --realtime``), and ``--slack-ms`` counts the wakes later than a
runner's slack (blocks of 256 at 48 kHz: 5.333 ms, 10.7 ms of slack by default).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddsp_pd.stream.priority import request_realtime

THRESHOLDS_MS = (5.0, 10.0, 20.0, 40.0)


def probe(
    seconds: float, realtime: bool, period: float | None = None
) -> tuple[np.ndarray, bool, float]:
    """Lateness (ms) of every wake-up of a 1 ms sleep loop (or, with ``period`` in seconds,
    of a loop that sleeps until each period is due), whether the loop ran real-time, and the
    steal time (s) the kernel counted meanwhile (NaN where unknown)."""
    late: list[float] = []
    got = [False]

    def loop() -> None:
        got[0] = request_realtime() if realtime else False
        start = time.perf_counter()
        end = start + seconds
        k = 0
        while True:
            before = time.perf_counter()
            if before >= end:
                return
            if period is None:
                time.sleep(0.001)
                late.append(time.perf_counter() - before - 0.001)
                continue
            due = start + k * period
            k += 1
            if due > before:
                time.sleep(due - before)
            late.append(time.perf_counter() - due)

    steal_before = _steal()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    thread.join()
    return np.array(late) * 1000.0, got[0], _steal() - steal_before


def _steal() -> float:
    """Seconds of steal time summed over the CPUs (Linux ``/proc/stat``), NaN elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-realtime", action="store_true")
    parser.add_argument(
        "--period-ms",
        type=float,
        default=0.0,
        help="sleep until each period is due (a block clock) instead of 1 ms",
    )
    parser.add_argument("--slack-ms", type=float, default=0.0,
                        help="also count the wake-ups later than this")  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    period = args.period_ms / 1000.0 if args.period_ms > 0 else None
    late, realtime, steal = probe(args.minutes * 60.0, not args.no_realtime, period)
    thresholds = THRESHOLDS_MS + ((args.slack_ms,) if args.slack_ms > 0 else ())
    counts = ", ".join(f"> {t:g} ms: {int((late > t).sum())}" for t in thresholds)
    print(f"{late.size} wake-ups in {args.minutes:g} min ({'real-time' if realtime else 'normal'}"
          f" thread): late p50 {np.median(late):.3f} ms, p99.9 {np.percentile(late, 99.9):.2f}"
          f" ms, max {late.max():.1f} ms; {counts}; steal {steal:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
