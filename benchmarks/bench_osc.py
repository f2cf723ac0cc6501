"""Time from ``/ddsp/render`` to ``/ddsp/done`` over OSC with the real engine.

Starts ``ddsp-pd serve`` in its own process (as the Pd patch would use it), then measures:

- cold: a new input file each time (same clip, a slightly different gain, so the content-keyed
  feature cache misses): feature extraction + controls + model + write;
- warm: a control change only (the loudness shift), features cached: controls + model + write.

Prints the median, min and max of each. Usage:
    python benchmarks/bench_osc.py [--input WAV] [--checkpoint DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared")) / "fixtures"
DEFAULT_INPUT = FIXTURES / "audio" / "syn_vibrato.wav"  # 10 s, 16 kHz
DEFAULT_CHECKPOINT = FIXTURES / "reference" / "solo_ddsp37" / "checkpoint"
TIMEOUT = 600.0


class Client:
    """Sends OSC to the server and waits for named replies."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)

    def send(self, address: str, *args: object) -> None:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            kind = "i" if isinstance(arg, int) else "f" if isinstance(arg, float) else "s"
            builder.add_arg(arg, kind)
        self.sock.sendto(builder.build().dgram, self.server)

    def wait(self, *addresses: str) -> OscMessage:
        while True:
            msg = OscMessage(self.sock.recv(65535))
            if msg.address == "/ddsp/error":
                raise RuntimeError(f"server error: {msg.params}")
            if msg.address in addresses:
                return msg

    def timed(self, address: str, *args: object, until: str) -> float:
        started = time.perf_counter()
        self.send(address, *args)
        self.wait(until)
        return time.perf_counter() - started


def start_server(checkpoint: Path, out: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    code = "import sys; from ddsp_pd.cli import main; sys.exit(main())"
    args = ["serve", "--port", "0", "-c", str(checkpoint), "--output-dir", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    found: list[tuple[str, int]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on udp ([0-9.]+):(\d+)", line)
            if match:
                found.append((match.group(1), int(match.group(2))))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(TIMEOUT):
        proc.kill()
        raise RuntimeError("ddsp-pd serve did not start")
    return proc, found[0]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<34} median {statistics.median(values):7.3f} s   "
        f"min {min(values):7.3f}   max {max(values):7.3f}   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    audio, rate = sf.read(str(args.input), dtype="float32")
    seconds = len(audio) / rate
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        proc, address = start_server(args.checkpoint, tmp_path / "out")
        startup = time.perf_counter() - started
        client = Client(address)
        try:
            client.send("/ddsp/hello", client.sock.getsockname()[1])
            client.wait("/ddsp/ready")

            def new_input(i: int) -> str:
                path = tmp_path / f"input_{i}.wav"
                sf.write(str(path), audio * np.float32(1.0 - 1e-3 * i), rate)
                return str(path)

            client.send("/ddsp/input", new_input(0))
            client.wait("/ddsp/state")
            first = client.timed("/ddsp/render", until="/ddsp/done")

            cold = []
            for i in range(1, args.repeats + 1):
                client.send("/ddsp/input", new_input(i))
                client.wait("/ddsp/state")
                cold.append(client.timed("/ddsp/render", until="/ddsp/done"))

            warm = []
            for i in range(args.repeats):
                client.send("/ddsp/loudness", float(i % 2))
                client.wait("/ddsp/state")
                warm.append(client.timed("/ddsp/render", until="/ddsp/done"))

            ping = [client.timed("/ddsp/ping", until="/ddsp/pong") for _ in range(50)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    print(f"bench_osc: {args.input.name} ({seconds:.1f} s at {rate} Hz), checkpoint "
          f"{args.checkpoint}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'server start (import, load model)':<34} {startup:7.3f} s")
    print(f"{'first render (graph warm-up)':<34} {first:7.3f} s")
    print(summary("cold render (new input file)", cold))
    print(summary("warm render (control change)", warm))
    ping_ms = sorted(1000 * p for p in ping)
    print(f"{'ping round trip':<34} median {statistics.median(ping_ms):7.3f} ms  "
          f"max {ping_ms[-1]:7.3f} ms (n={len(ping_ms)})")  # fmt: skip
    print(f"real-time factor, warm median: {statistics.median(warm) / seconds:.3f}")


if __name__ == "__main__":
    main()
