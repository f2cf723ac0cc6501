"""Fresh-process costs: a whole ``ddsp-pd render`` and ``ddsp-pd serve`` until ready.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_startup.py [--checkpoint DIR] [--input WAV] [--seconds 10]

- ``ddsp-pd render`` of a ``--seconds`` clip in a new process: wall time and peak resident
  memory (the child's ``ru_maxrss``), and whether TensorFlow was imported (it must not be).
- ``ddsp-pd serve``: time from starting the process to the answer to ``/ddsp/hello``
  (``/ddsp/ready``: the checkpoint loaded and warmed), its resident memory then, and the
  first render of a 10 s input after that.

Goals (issue 10, 2 cores): render of 10 s with the shipped default <= 1.0 s and <= 300 MB;
serve ready <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
DEFAULT_CKPT = ROOT / "checkpoints" / "default"
DEFAULT_INPUT = SHARED / "fixtures" / "audio" / "midi_flute.wav"
TIMEOUT = 120.0

# Runs one command as its only child and reports the child's peak RSS (kB on Linux).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
print(json.dumps({"rc": done.returncode, "wall": wall, "tf": "TENSORFLOW-IMPORTED" in done.stderr,
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

# The render command in-process, reporting whether TensorFlow got imported.
_RENDER = """
import sys
from ddsp_pd.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
if "tensorflow" in sys.modules:
    sys.stderr.write("TENSORFLOW-IMPORTED\\n")
sys.exit(code)
"""


def _clip(source: Path, seconds: float, out: Path) -> None:
    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(str(source), dtype="float32", always_2d=True)
    sf.write(str(out), np.resize(audio.mean(axis=1), int(seconds * rate)), rate)


def _render_once(checkpoint: Path, clip: Path, out: Path) -> dict:
    cmd = [sys.executable, "-c", _RENDER, "render", str(clip), "-c", str(checkpoint)]
    cmd += ["-o", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _osc(address: str, *args: int) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg, "i")
    return builder.build().dgram


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _serve_once(checkpoint: Path, clip: Path, out: Path) -> tuple[float, int, float]:
    """Seconds to /ddsp/ready, resident kB then, seconds of the first 10 s render."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    code = "import sys; from ddsp_pd.cli import main; sys.exit(main())"
    args = ["serve", "--port", "0", "-c", str(checkpoint), "--output-dir", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    found: list[tuple[str, int]] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on udp ([0-9.]+):(\d+)", line)
            if match:
                found.append((match.group(1), int(match.group(2))))
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)

    def wait(address: str) -> OscMessage:
        while True:
            msg = OscMessage(sock.recv(65535))
            if msg.address == "/ddsp/error":
                raise RuntimeError(f"server error: {msg.params}")
            if msg.address == address:
                return msg

    try:
        if not listening.wait(TIMEOUT):
            raise RuntimeError("ddsp-pd serve did not start")
        server = found[0]
        sock.sendto(_osc("/ddsp/hello", sock.getsockname()[1]), server)
        wait("/ddsp/ready")
        ready = time.perf_counter() - started
        rss = _rss_kb(proc.pid)
        builder = OscMessageBuilder(address="/ddsp/input")
        builder.add_arg(str(clip), "s")
        sock.sendto(builder.build().dgram, server)
        wait("/ddsp/state")
        t0 = time.perf_counter()
        sock.sendto(_osc("/ddsp/render"), server)
        wait("/ddsp/done")
        first = time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sock.close()
    return ready, rss, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="ddsp-pd-startup-") as tmp:
        tmp_path = Path(tmp)
        clip = tmp_path / "clip.wav"
        _clip(args.input, args.seconds, clip)
        out = tmp_path / "out.wav"
        runs = [_render_once(args.checkpoint, clip, out) for _ in range(args.repeats)]
        if any(r["rc"] != 0 for r in runs):
            print("render failed:", runs)
            return 1
        walls = [r["wall"] for r in runs]
        rss = max(r["rss_kb"] for r in runs) / 1024
        print(
            f"ddsp-pd render, {args.seconds:g} s, fresh process: median "
            f"{statistics.median(walls):.2f} s, min {min(walls):.2f} s, peak RSS {rss:.0f} MB "
            f"(n={len(runs)}; goal <= 1.0 s, <= 300 MB); TensorFlow imported: "
            f"{any(r['tf'] for r in runs)}"
        )
        if not args.skip_serve:
            results = [
                _serve_once(args.checkpoint, clip, tmp_path / f"serve{i}")
                for i in range(max(1, args.repeats // 2))
            ]
            ready = [r[0] for r in results]
            print(
                f"ddsp-pd serve, process start to /ddsp/ready: median "
                f"{statistics.median(ready):.2f} s, min {min(ready):.2f} s (goal <= 1.5 s); "
                f"RSS then {max(r[1] for r in results) / 1024:.0f} MB; first 10 s render "
                f"{statistics.median(r[2] for r in results) * 1e3:.0f} ms"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
