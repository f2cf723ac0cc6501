"""Long inputs: peak memory and wall time of ``ddsp-pd render`` for 1, 10 and 60 minutes, and the
server's resident memory with two solo-size checkpoints loaded after a 10-minute render.

Prints figures only (no assertions). Run from the project root:

    python benchmarks/bench_long.py [--minutes 1 10 60] [--rate 16000] [--rate-44k-minutes 10]
                                    [--skip-server] [--checkpoint DIR] [--solo DIR]

Inputs are synthetic, written block by block to a temporary WAV (float32): a melody of harmonic
tones (random notes, 0.2-1.2 s, ten partials, 5.5 Hz vibrato), with rests and a little noise.

- ``ddsp-pd render`` in a fresh process: wall time and the child's peak RSS (``ru_maxrss``),
  for a 16 kHz input of each length and for a 44.1 kHz one (resampling in and out).
- ``ddsp-pd serve`` with the default model, two copies of the solo checkpoint loaded under
  different paths, and one render of a 10-minute input: resident memory after each step and
  the process's peak (``VmHWM``).

Goals (issue 10): 1 h at 16 kHz <= 1.5 GB with time within 10 % of 60x the 1-minute figure;
server with two solo checkpoints and a 10-minute render <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
DEFAULT_CKPT = ROOT / "checkpoints" / "default"
SOLO_CKPT = SHARED / "fixtures" / "reference" / "solo_ddsp37" / "checkpoint"
TIMEOUT = 900.0

# Runs one command as its only child and reports the child's peak RSS (kB on Linux).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
print(json.dumps({"rc": done.returncode, "wall": wall, "err": done.stderr[-2000:],
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def melody_block(
    rng: np.random.Generator, sample_rate: int, n_samples: int, state: dict
) -> np.ndarray:
    """The next ``n_samples`` of an endless synthetic melody (mono float32).

    ``state`` carries the note being played and its phase between calls, so blocks join
    without clicks; ``rng`` draws the notes.
    """
    out = np.zeros(n_samples, np.float64)
    filled = 0
    while filled < n_samples:
        if state.get("left", 0) <= 0:
            rest = rng.random() < 0.15
            state["midi"] = None if rest else float(rng.integers(55, 84))
            state["length"] = int(rng.uniform(0.2, 1.2) * sample_rate)
            state["left"] = state["length"]
            state["phase"] = 0.0
        count = min(n_samples - filled, state["left"])
        if state["midi"] is not None:
            pos = state["length"] - state["left"] + np.arange(count)
            t = pos / sample_rate
            f0 = 440.0 * 2.0 ** ((state["midi"] - 69.0 + 0.3 * np.sin(2 * np.pi * 5.5 * t)) / 12)
            phase = state["phase"] + 2 * np.pi * np.cumsum(f0) / sample_rate
            state["phase"] = float(phase[-1])
            attack = np.minimum(1.0, pos / (0.03 * sample_rate))
            release = np.minimum(1.0, (state["length"] - pos) / (0.05 * sample_rate))
            tone = np.zeros(count)
            for k in range(1, 11):
                partial = np.sin(k * phase) / k
                tone += np.where(k * f0 < 0.45 * sample_rate, partial, 0.0)
            out[filled : filled + count] = 0.25 * tone * attack * release
        filled += count
        state["left"] -= count
    out += 1e-3 * rng.standard_normal(n_samples)
    return out.astype(np.float32)


def write_melody(path: Path, seconds: float, sample_rate: int, seed: int = 0) -> Path:
    """Write ``seconds`` of the synthetic melody to a float32 WAV, 10 s at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    state: dict = {}
    total = round(seconds * sample_rate)
    with sf.SoundFile(str(path), "w", sample_rate, 1, subtype="FLOAT", format="WAV") as out:
        for start in range(0, total, 10 * sample_rate):
            out.write(melody_block(rng, sample_rate, min(10 * sample_rate, total - start), state))
    return path


def render_once(checkpoint: Path, clip: Path, out: Path) -> dict:
    """A fresh ``ddsp-pd render`` of ``clip``: wall seconds, peak RSS (kB), return code."""
    code = "import sys; from ddsp_pd.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "render", str(clip), "-c", str(checkpoint), "-o", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _osc(address: str, *args: object) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg, "s" if isinstance(arg, str) else "i")
    return builder.build().dgram


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def serve_memory(
    checkpoint: Path, solo: Path, clip: Path, tmp: Path, out_rate: int | None = None
) -> dict:
    """Resident memory (MB) of ``ddsp-pd serve``: ready, with two solo checkpoints loaded
    (the second a copy under another path), after a render of ``clip`` (at ``out_rate``,
    or the input's); and its peak."""
    from pythonosc.osc_message import OscMessage

    copy = tmp / f"solo_copy_{out_rate}"
    shutil.copytree(solo, copy)
    code = "import sys; from ddsp_pd.cli import main; sys.exit(main())"
    args = ["serve", "--port", "0", "-c", str(checkpoint), "--output-dir", str(tmp / "serve")]
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

    figures: dict = {}
    try:
        if not listening.wait(TIMEOUT):
            raise RuntimeError("ddsp-pd serve did not start")
        server = found[0]
        sock.sendto(_osc("/ddsp/hello", sock.getsockname()[1]), server)
        wait("/ddsp/ready")
        figures["ready_mb"] = _status_kb(proc.pid, "VmRSS") / 1024
        for path in (solo, copy):
            sock.sendto(_osc("/ddsp/checkpoint", str(path)), server)
            wait("/ddsp/loaded")
        figures["two_solo_mb"] = _status_kb(proc.pid, "VmRSS") / 1024
        if out_rate:
            sock.sendto(_osc("/ddsp/samplerate", int(out_rate)), server)
            wait("/ddsp/state")
        sock.sendto(_osc("/ddsp/input", str(clip)), server)
        wait("/ddsp/state")
        started = time.perf_counter()
        sock.sendto(_osc("/ddsp/render"), server)
        wait("/ddsp/done")
        figures["render_s"] = time.perf_counter() - started
        figures["after_render_mb"] = _status_kb(proc.pid, "VmRSS") / 1024
        figures["peak_mb"] = _status_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sock.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--solo", type=Path, default=SOLO_CKPT)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0, 60.0])
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument(
        "--rate-44k-minutes", type=float, default=10.0, help="length of the 44.1 kHz run (0: none)"
    )
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument(
        "--serve-rates",
        type=int,
        nargs="+",
        default=[0],
        help="output rates of the server runs (0: the input's)",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary inputs")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    runs = [(m, args.rate) for m in args.minutes]
    if args.rate_44k_minutes > 0:
        runs.append((args.rate_44k_minutes, 44100))
    with tempfile.TemporaryDirectory(prefix="ddsp-pd-long-", dir=args.tmp) as tmp:
        tmp_path = Path(tmp)
        walls: dict[tuple[float, int], float] = {}
        for minutes, rate in runs:
            clip = write_melody(tmp_path / f"in_{minutes:g}m_{rate}.wav", minutes * 60, rate)
            out = tmp_path / "out.wav"
            result = render_once(args.checkpoint, clip, out)
            clip.unlink()
            out.unlink(missing_ok=True)
            if result["rc"] != 0:
                print(f"render of {minutes:g} min at {rate} Hz failed:\n{result['err']}")
                return 1
            walls[(minutes, rate)] = result["wall"]
            print(
                f"ddsp-pd render, {minutes:g} min at {rate} Hz: wall {result['wall']:.1f} s, "
                f"peak RSS {result['rss_kb'] / 1024:.0f} MB"
            )
        one = walls.get((1.0, args.rate))
        ten = walls.get((10.0, args.rate))
        hour = walls.get((60.0, args.rate))
        if one and hour:
            # The fixed start-up (imports, model, kernels) is in every run: the per-minute
            # cost of the longer runs beyond the 1-minute one shows the linearity.
            print(
                f"60 min / (60 x 1 min): {hour / (60 * one):.2f} (goal <= 1.10); per minute "
                f"beyond the first: {(hour - one) / 59:.2f} s (60 min)"
                + (f", {(ten - one) / 9:.2f} s (10 min)" if ten else "")
            )
        if not args.skip_server:
            clip = write_melody(tmp_path / "serve_10m.wav", 600, args.rate, seed=1)
            for out_rate in args.serve_rates:
                figures = serve_memory(args.checkpoint, args.solo, clip, tmp_path, out_rate)
                text = (
                    "ddsp-pd serve, output at {rate}: ready {ready_mb:.0f} MB; two solo "
                    "checkpoints loaded {two_solo_mb:.0f} MB; after a 10-minute render "
                    "({render_s:.1f} s) {after_render_mb:.0f} MB; peak {peak_mb:.0f} MB "
                    "(goal <= 500 MB)"
                )
                rate = f"{out_rate} Hz" if out_rate else f"the input's {args.rate} Hz"
                print(text.format(rate=rate, **figures))
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
