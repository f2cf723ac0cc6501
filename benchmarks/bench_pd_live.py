"""``[ddsp.live~]`` figures for docs/performance.md ("Pd live"): a real headless Pd at 48 kHz
(``-nosound``, real-time clock, ``-sleepgrain 1``) against ``ddsp-pd serve`` with the default
model, for a few block sizes at the object's default DELAY (or ``--delay N`` blocks):

- the latency the object reports (server LATENCY + DELAY x BLOCK + reblocking);
- the measured input-to-output latency: an impulse train played through the object, the lag
  of the cross-correlation peak of the clicks with the output's magnitude (the method of
  benchmarks/bench_live.py), and how far it is from the reported figure (whose server
  LATENCY holds the model's response to an attack, ``ddsp_pd.stream.response``);
- dropouts (blocks played as silence because their reply came too late) over ``--minutes`` of
  music (a fixture melody looped), with the server's lost / late / overrun counts and RTF.

    python benchmarks/bench_pd_live.py [--blocks 64 128 256] [--minutes 0.5] [--delay N]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import AUDIO  # noqa: E402
from pd_harness import PD, RealServer, _osc_message, free_udp_port  # noqa: E402
from pd_live_harness import (  # noqa: E402
    PD_RATE,
    LivePd,
    impulse_train,
    xcorr_lag,
)

from ddsp_pd.audio_io import load_audio  # noqa: E402


def music() -> np.ndarray:
    """A fixture melody at 48 kHz (the shipped example without the fixtures)."""
    path = AUDIO / "midi_flute.wav"
    if not path.exists():
        path = ROOT / "examples" / "melody.wav"
    return load_audio(path, PD_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--minutes", type=float, default=0.5, help="length of the dropout run")
    parser.add_argument("--delay", type=int, default=0, help="DELAY in blocks (0: default)")
    args = parser.parse_args()
    if PD is None:
        sys.exit("Pure Data is not installed (apt-get install puredata-core)")
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {load:.1f}")  # fmt: skip
    print("block | delay (blocks) | reported latency ms | clicks: xcorr peak ms | "
          "measured - reported ms | dropouts / blocks (run) | server lost / "
          "late / overruns | server RTF")  # fmt: skip
    clicks = impulse_train(6.0)
    melody = music()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = RealServer(free_udp_port(), folder, None, folder / "server.log").start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # Auto-adjust off, as in tests/test_pd_live.py.
            sock.sendto(_osc_message("/ddsp/adjust", (0,)), ("127.0.0.1", server.port))
        try:
            for block in args.blocks:
                work = folder / str(block)
                work.mkdir()
                with LivePd(work, server.port, block=block, delay=args.delay, record_s=6.5) as live:
                    reported, reported_ms = live.wait_open()
                    take = live.take(clicks[:PD_RATE], "warm-up", seconds=1.5)
                    engine_latency = take.stats[-1][-1]  # the server's LATENCY
                    delay = round((reported - engine_latency - max(0, block - 64)) / block)
                    take = live.take(clicks, "clicks")
                    measured = xcorr_lag(clicks, take.output)
                    live.load(melody, "music")
                    seconds = args.minutes * 60.0
                    dropouts, mark = live.play(seconds, loop=True)
                    stats = live.stats(1, mark)
                    first, last = (stats[0], stats[-1]) if stats else ([0] * 7, [0] * 7)
                    counts = [int(last[i] - first[i]) for i in (1, 2, 4)]
                    blocks = int(seconds * PD_RATE / block)
                    rtf = np.median([row[5] for row in stats]) if stats else float("nan")
                    to_ms = 1000.0 / PD_RATE
                    print(
                        f"{block} | {delay} | {reported_ms:.1f} | {measured * to_ms:.1f} | "
                        f"{(measured - reported) * to_ms:+.1f} | {dropouts[0]} / {blocks} "
                        f"({seconds:g} s) | {counts[0]} / {counts[1]} / {counts[2]} | {rtf:.3f}",
                        flush=True,
                    )
                    bad = live.bad_lines()
                    if bad:
                        print(f"  Pd complained: {bad[:5]}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
