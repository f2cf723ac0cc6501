"""Helpers for the Pure Data tests: run Pd headless, drive a patch, and serve it OSC.

- :class:`PdSession` runs ``pd -nogui -nosound`` under ``timeout`` with a small remote patch
  (written next to the test's files) that forwards FUDI datagrams to named receivers, so a
  test can click through ``timbre_transfer.pd`` one message at a time
  (``session.send("ddsp-pd", "render")``) and wait for what the patch logs on stderr.
- :class:`FakeServer` answers the namespace of ``docs/osc.md`` with python-osc: it keeps the
  state, validates controls, and writes real WAV files for ``/ddsp/done`` and
  ``/ddsp/features``. It is the server for the patch-logic tests.
- :class:`RealServer` runs ``ddsp-pd serve`` in a subprocess for the end-to-end test.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from ddsp_pd.server.input_copy import pd_readable

ROOT = Path(__file__).resolve().parents[1]
# DDSP_PD_PATCHES runs the tests against another copy of the patches (e.g. an older one).
PATCHES = Path(os.environ.get("DDSP_PD_PATCHES") or ROOT / "patches")
MAIN_PATCH = PATCHES / "timbre_transfer.pd"
PD = shutil.which("pd")
PD_MISSING = "Pure Data is not installed (apt-get install puredata-core); CI installs it"

# What a clean Pd run never prints (Pd's exit code is 0 whatever happens).
BAD_LINE = re.compile(r"couldn't create|^error: |connection failed|^warning: ")


def free_udp_port() -> int:
    """A UDP port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fudi_atom(value: object) -> str:
    """One atom in Pd's FUDI text format, with spaces, commas, semicolons escaped."""
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"([ ,;\\$])", r"\\\1", text)


def _remote_patch(port: int) -> str:
    # [netreceive -u PORT] -> 'RECEIVER ARGS' is sent to the named RECEIVER.
    return "\n".join(
        [
            "#N canvas 0 50 450 300 12;",
            f"#X obj 20 20 netreceive -u {port};",
            "#X obj 20 50 list;",
            "#X obj 20 80 t a a;",
            "#X obj 120 110 list split 1;",
            "#X obj 20 110 list split 1;",
            "#X obj 20 140 send;",
            "#X obj 220 20 loadbang;",
            "#X msg 220 50 harness ready;",
            "#X obj 220 80 print pd-harness;",
            "#X connect 0 0 1 0;",
            "#X connect 1 0 2 0;",
            "#X connect 2 1 3 0;",
            "#X connect 3 0 5 1;",
            "#X connect 2 0 4 0;",
            "#X connect 4 1 5 0;",
            "#X connect 6 0 7 0;",
            "#X connect 7 0 8 0;",
            "",
        ]
    )


class PdSession:
    """One headless Pd process with a patch open, driven by messages, watched on stderr."""

    def __init__(
        self,
        patch: Path,
        workdir: Path,
        *,
        sends: tuple[str, ...] = (),
        timeout_s: float = 180.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if PD is None:
            raise RuntimeError(PD_MISSING)
        self.patch = patch
        self.workdir = workdir
        self.control_port = free_udp_port()
        self.lines: list[str] = []
        self._cond = threading.Condition()
        remote = workdir / f"pd_remote_{self.control_port}.pd"
        remote.write_text(_remote_patch(self.control_port))
        cmd = ["timeout", "-k", "5", str(int(timeout_s)), PD, "-nogui", "-nosound", "-nomidi"]
        cmd += ["-noprefs", "-nrt", "-stderr", *extra_args, "-open", str(remote)]
        cmd += ["-open", str(patch)]
        for message in sends:
            cmd += ["-send", message]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            cwd=workdir,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.wait_for(r"^pd-harness: harness ready", timeout=20)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        """The index of the next line: pass it to :meth:`wait_for` to see only newer lines."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, *, timeout: float = 15.0, since: int = 0) -> re.Match[str]:
        """Wait until a stderr line at index >= ``since`` matches ``pattern``; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.2))
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"Pd never printed /{pattern}/ within {timeout} s; its log:\n{tail}")

    def send(self, receiver: str, *atoms: object) -> None:
        """Send ``RECEIVER ATOMS;`` to Pd, as if that message box had been clicked."""
        text = " ".join(fudi_atom(a) for a in (receiver, *atoms)) + ";\n"
        self._sock.sendto(text.encode(), ("127.0.0.1", self.control_port))

    def displays(self, timeout: float = 10.0) -> dict[str, str]:
        """What the patch shows now: ``ddsp-pd displays`` makes every display log its text.

        Keys are ``KEY`` for ``display KEY WORDS`` (the text, unescaped) and ``control NAME``
        for ``control NAME VALUE confirmed|unconfirmed`` (value and state).
        """
        mark = self.mark()
        self.send("ddsp-pd", "displays")
        self.wait_for(r"^ddsp-pd: display end$", since=mark, timeout=timeout)
        shown: dict[str, str] = {}
        with self._cond:
            lines = self.lines[mark:]
        for line in lines:
            match = re.match(r"^ddsp-pd: (display|control) (\S+) ?(.*)$", line)
            if match and match.group(2) != "end":
                key = match.group(2) if match.group(1) == "display" else f"control {match.group(2)}"
                shown[key] = match.group(3).replace("\\ ", " ")
            elif line == "ddsp-pd: display end":
                break
        return shown

    def wait_display(
        self, key: str, test: Callable[[str], bool], *, timeout: float = 20.0, every: float = 0.1
    ) -> dict[str, str]:
        """Ask for the displays until ``test(displays[key])`` holds; return all of them."""
        deadline = time.monotonic() + timeout
        shown: dict[str, str] = {}
        while time.monotonic() < deadline:
            shown = self.displays()
            if key in shown and test(shown[key]):
                return shown
            time.sleep(every)
        raise AssertionError(f"display {key!r} never passed the test; it shows {shown.get(key)!r}")

    def count(self, pattern: str, since: int = 0) -> int:
        """How many lines at index >= ``since`` match ``pattern``."""
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines[since:] if regex.search(line))

    def bad_lines(self) -> list[str]:
        """Lines of Pd's log that mean something went wrong in Pd itself."""
        with self._cond:
            return [line for line in self.lines if BAD_LINE.search(line)]

    def close(self) -> None:
        """Stop Pd (it has no quit-on-stdin); never leaves a process behind."""
        self._sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)

    def __enter__(self) -> PdSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_pd_batch(patch: Path, *, timeout_s: float = 30.0, quit_at_once: bool = True) -> list[str]:
    """Run ``patch`` in ``pd -batch`` (quit at once, or when the patch quits); return the log."""
    if PD is None:
        raise RuntimeError(PD_MISSING)
    cmd = ["timeout", "-k", "5", str(int(timeout_s)), PD, "-batch", "-nosound", "-nomidi"]
    cmd += ["-noprefs", "-nrt", "-stderr", "-open", str(patch)]
    if quit_at_once:
        cmd += ["-send", "pd quit"]
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        raise AssertionError(f"pd exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stderr.splitlines()


# ----------------------------------------------------------------------------------------------
# Reading patch files


def pd_records(path: Path) -> list[list[str]]:
    """The records of a .pd file as token lists (``#X obj 10 10 r foo`` -> its tokens).

    Escaped semicolons and commas inside boxes stay tokens (``\\;``, ``\\,``).
    """
    text = path.read_text()
    records = re.split(r"(?<!\\);\s*(?:\n|$)", text)
    return [r.split() for r in records if r.strip()]


def pd_boxes(path: Path) -> list[tuple[str, list[str]]]:
    """(kind, args) of every box in a patch file, subpatches included.

    kind is obj, msg, text, floatatom, symbolatom, listbox or array; args are the box's
    atoms after its position (for obj: the class name first), without a box width.
    """
    boxes = []
    for rec in pd_records(path):
        if len(rec) < 2 or rec[0] != "#X":
            continue
        kind = rec[1]
        if kind in ("obj", "msg", "text", "floatatom", "symbolatom", "listbox"):
            args = rec[4:]
            if len(args) >= 3 and args[-2] == "f" and args[-1].isdigit() and args[-3][-1] == ",":
                args = [*args[:-3], args[-3][:-1]] if args[-3] != "," else args[:-3]  # ", f 30"
            boxes.append((kind, args))
        elif kind == "array":
            boxes.append(("array", rec[2:]))
    return boxes


# ----------------------------------------------------------------------------------------------
# OSC servers


def _osc_message(address: str, args: tuple[object, ...]) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        if isinstance(arg, bool):  # Pd cannot read T/F: send 0/1
            builder.add_arg(int(arg), "i")
        elif isinstance(arg, int):
            builder.add_arg(arg, "i")
        elif isinstance(arg, float):
            builder.add_arg(arg, "f")
        else:
            builder.add_arg(str(arg), "s")
    return builder.build().dgram


# name -> (kind, low, high, default); kind "f" float, "i" integer, "b" 0/1.
CONTROLS: dict[str, tuple[str, float, float, float]] = {
    "octave": ("f", -4, 4, 0.0),
    "confidence": ("f", 0, 1, 0.2),
    "loudness": ("f", -60, 60, 0.0),
    "adjust": ("b", 0, 1, 1),
    "quiet": ("f", 0, 100, 20.0),
    "autotune": ("f", 0, 1, 0.0),
    "note_threshold": ("f", 0, 10, 1.0),
    "samplerate": ("i", 0, 192000, 0),
    "normalize": ("b", 0, 1, 1),
    "seed": ("i", 0, 2**31 - 1, 0),
    "auto": ("b", 0, 1, 0),
}

FRAME_RATE = 250  # frames per second of the fake features file (hop 64 at 16 kHz)


class FakeServer:
    """A stand-in for ``ddsp-pd serve`` speaking ``docs/osc.md``, with inspectable state.

    Renders are a deterministic tone (220 Hz shifted by ``octave``, as long as the input) so
    that a test can tell settings apart; features are smooth made-up curves. Every reply is
    sent from the server's own socket, as a real server must for Pd's ``[netsend]`` to read
    replies that come before ``/ddsp/hello``.
    """

    kind = "fake"

    def __init__(self, port: int, output_dir: Path, *, checkpoints: dict[str, Path] | None = None):
        self.port = port
        self.output_dir = output_dir
        self.checkpoints = dict(checkpoints or {})
        # docs/osc.md: /ddsp/status reports input, checkpoint, then the controls in this order.
        self.state: dict[str, object] = {"input": "", "checkpoint": ""}
        self.state.update((k, v[3]) for k, v in CONTROLS.items())
        self.received: list[tuple[str, tuple[object, ...]]] = []
        self.reply_to: tuple[str, int] | None = None
        self._cond = threading.Condition()
        self._renders = 0
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._handle, needs_reply_address=True)
        self._server = BlockingOSCUDPServer(("127.0.0.1", port), dispatcher)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- life cycle
    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection
    def wait_received(self, address: str, *, timeout: float = 10.0, since: int = 0) -> tuple:
        """Wait until a message to ``address`` arrived (at index >= since); return its args."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for addr, args in self.received[since:]:
                    if addr == address:
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the fake server never got {address}; it got {self.received[-20:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def count(self) -> int:
        with self._cond:
            return len(self.received)

    # -- protocol
    def _send(self, client: tuple[str, int], address: str, *args: object) -> None:
        target = self.reply_to or client
        self._server.socket.sendto(_osc_message(address, args), target)

    def _error(self, client: tuple[str, int], code: str, message: str) -> None:
        self._send(client, "/ddsp/error", code, message)

    def _handle(self, client: tuple[str, int], address: str, *args: object) -> None:
        with self._cond:
            self.received.append((address, args))
            self._cond.notify_all()
        name = address.rsplit("/", 1)[-1]
        if not address.startswith("/ddsp/"):
            self._error(client, "osc", f"unknown address {address}")
        elif name == "hello":
            self.reply_to = (client[0], int(args[0]))
            if self.state["checkpoint"]:  # docs/osc.md: the model first, then ready
                self._send(client, "/ddsp/loaded", self.state["checkpoint"], "2.x", 16000)
            self._send(client, "/ddsp/ready", "fake-0.1", self.state["checkpoint"])
        elif name == "ping":
            self._send(client, "/ddsp/pong")
        elif name in CONTROLS:
            self._control(client, name, args)
        elif name == "input":
            self._input(client, args)
        elif name == "checkpoints":
            self._list_checkpoints(client)
        elif name == "checkpoint":
            self._load_checkpoint(client, args)
        elif name == "status":
            for key, value in self.state.items():
                self._send(client, "/ddsp/state", key, value)
            self._send(client, "/ddsp/state", "end", 1)
        elif name == "render":
            self._render(client)
        elif name == "features":
            self._features(client)
        elif name == "cancel":
            self._send(client, "/ddsp/cancelled")
        else:
            self._error(client, "osc", f"unknown address {address}")

    def _control(self, client: tuple[str, int], name: str, args: tuple[object, ...]) -> None:
        kind, low, high, _ = CONTROLS[name]
        if len(args) != 1 or not isinstance(args[0], (int, float)):
            self._error(client, "control", f"{name} needs one number")
            return
        value = float(args[0])
        if name == "samplerate" and 0 < value < 8000:
            self._error(
                client, "control", f"samplerate must be 0 or in [8000, 192000], got {value:g}"
            )
            return
        if kind in "ib" and value != int(value):
            self._error(client, "control", f"{name} must be a whole number, got {value:g}")
            return
        if not low <= value <= high:
            self._error(client, "control", f"{name} must be in [{low:g}, {high:g}], got {value:g}")
            return
        self.state[name] = int(value) if kind in "ib" else value
        self._send(client, "/ddsp/state", name, self.state[name])
        if name != "auto" and self.state["auto"]:
            self._render(client)

    def _input(self, client: tuple[str, int], args: tuple[object, ...]) -> None:
        path = str(args[0]) if args else ""
        try:
            info = sf.info(path)
        except Exception:
            self._error(client, "input", f"cannot read input audio file: {path}")
            return
        if info.frames == 0:
            self._error(client, "input", f"input audio file is empty: {path}")
            return
        self.state["input"] = path
        self._send(client, "/ddsp/state", "input", path)
        shown = pd_readable(path)
        if shown is not None:
            self._send(client, "/ddsp/input_wav", path, shown.frames, shown.sample_rate)

    def _list_checkpoints(self, client: tuple[str, int]) -> None:
        self._send(client, "/ddsp/checkpoints_begin", len(self.checkpoints))
        for index, (name, path) in enumerate(self.checkpoints.items()):
            self._send(client, "/ddsp/checkpoint_entry", index, name, str(path))
        self._send(client, "/ddsp/checkpoints_end", len(self.checkpoints))

    def _load_checkpoint(self, client: tuple[str, int], args: tuple[object, ...]) -> None:
        given = str(args[0]) if args else ""
        paths = {str(p): n for n, p in self.checkpoints.items()}
        name = given if given in self.checkpoints else paths.get(given)
        if name is None:
            self._error(client, "checkpoint", f"no checkpoint named or at {given}")
            return
        self.state["checkpoint"] = name
        self._send(client, "/ddsp/progress", "load", 0.0)
        self._send(client, "/ddsp/progress", "load", 1.0)
        self._send(client, "/ddsp/loaded", name, "2.x", 16000)
        self._send(client, "/ddsp/state", "checkpoint", name)

    def _input_audio(self, client: tuple[str, int]) -> tuple[np.ndarray, int] | None:
        path = str(self.state["input"])
        if not path:
            self._error(client, "input", "no input file chosen")
            return None
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return audio.mean(axis=1), rate

    def _render(self, client: tuple[str, int]) -> None:
        loaded = self._input_audio(client)
        if loaded is None:
            return
        audio, in_rate = loaded
        rate = int(self.state["samplerate"]) or in_rate
        for stage in ("features", "controls", "model"):
            self._send(client, "/ddsp/progress", stage, 0.5)
        self._send(client, "/ddsp/adjusted", 1, "ok", 3, 0.0, 0.01)
        n = round(len(audio) * rate / in_rate)
        t = np.arange(n) / rate
        freq = 220.0 * 2.0 ** float(self.state["octave"])
        out = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        gain_db = 0.0
        if self.state["normalize"] and n:
            gain = 10 ** (-1 / 20) / float(np.max(np.abs(out)))
            out = (out * gain).astype(np.float32)
            gain_db = 20 * math.log10(gain)
        self._renders += 1
        path = self.output_dir / f"fake-render-{self._renders}.wav"
        self._send(client, "/ddsp/progress", "write", 0.9)
        sf.write(path, out, rate, subtype="FLOAT")
        self._send(client, "/ddsp/done", str(path), n, rate, float(gain_db))

    def _shown_input(self, client: tuple[str, int], audio: np.ndarray, rate: int) -> None:
        """``/ddsp/input_wav``: the input itself if Pd reads it, else a mono float WAV copy."""
        path = str(self.state["input"])
        shown = pd_readable(path)
        if shown is None:
            copy = self.output_dir / "fake-input.wav"
            sf.write(copy, audio, rate, subtype="FLOAT")
            self._send(client, "/ddsp/input_wav", str(copy), len(audio), rate)
        else:
            self._send(client, "/ddsp/input_wav", path, shown.frames, shown.sample_rate)

    def _features(self, client: tuple[str, int]) -> None:
        loaded = self._input_audio(client)
        if loaded is None:
            return
        audio, in_rate = loaded
        self._shown_input(client, audio, in_rate)
        frames = max(1, int(len(audio) / in_rate * FRAME_RATE))
        t = np.arange(frames) / FRAME_RATE
        f0 = 220 + 10 * np.sin(2 * np.pi * 5 * t)
        conf = 0.5 + 0.4 * np.cos(2 * np.pi * t)
        loud = -40 + 10 * np.sin(2 * np.pi * 0.5 * t)
        mask = (conf > 0.5).astype(np.float64)
        f0_adj = f0 * 2.0 ** float(self.state["octave"])
        quiet = float(self.state["quiet"]) * (1 - mask) if self.state["adjust"] else 0.0
        loud_adj = loud + float(self.state["loudness"]) - quiet
        data = np.stack([f0, conf, loud, f0_adj, loud_adj, mask], axis=1).astype(np.float32)
        path = self.output_dir / "fake-features.wav"
        sf.write(path, data, FRAME_RATE, subtype="FLOAT")
        self._send(client, "/ddsp/features_done", str(path), frames, 6)


def _decode(data: bytes) -> tuple[str, list[object]] | None:
    try:
        message = OscMessage(data)
    except Exception:
        return None
    return message.address, list(message.params)


def osc_status(port: int, *, timeout: float = 10.0) -> dict[str, object]:
    """``/ddsp/status`` of the server on ``port``, as a dict (until ``state end``)."""
    state: dict[str, object] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        sock.sendto(_osc_message("/ddsp/status", ()), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                decoded = _decode(sock.recv(65536))
                if decoded and decoded[0] == "/ddsp/state":
                    key, value = decoded[1][0], decoded[1][1]
                    if key == "end":
                        return state
                    state[str(key)] = value
    raise AssertionError(f"no /ddsp/status from the server on port {port}: {state}")


class RealServer:
    """``ddsp-pd serve`` in a subprocess, for the end-to-end test."""

    kind = "real"

    def __init__(
        self,
        port: int,
        output_dir: Path,
        checkpoint: Path | None,
        log_path: Path,
        *,
        checkpoint_dirs: tuple[Path, ...] = (),
    ) -> None:
        self.port = port
        self.output_dir = output_dir
        self.checkpoint = checkpoint  # None: the server's default model
        self.checkpoint_dirs = checkpoint_dirs
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self, *, timeout: float = 240.0) -> RealServer:
        """Start the server and wait until it answers ``/ddsp/ping``."""
        cmd = [sys.executable, "-c", "from ddsp_pd.cli import main; main()", "serve"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.checkpoint is not None:
            cmd += ["--checkpoint", str(self.checkpoint)]
        cmd += ["--output-dir", str(self.output_dir)]
        for folder in self.checkpoint_dirs:
            cmd += ["--checkpoint-dir", str(folder)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"ddsp-pd serve exited early:\n{self.log()}")
                sock.sendto(_osc_message("/ddsp/ping", ()), ("127.0.0.1", self.port))
                with contextlib.suppress(TimeoutError):
                    data = sock.recv(65536)
                    decoded = _decode(data)
                    if decoded and decoded[0] == "/ddsp/pong":
                        return self
        self.stop()
        raise AssertionError(f"ddsp-pd serve did not answer /ddsp/ping in {timeout} s")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would: it replies nothing more."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def status(self, timeout: float = 10.0) -> dict[str, object]:
        """The server's whole state (``/ddsp/status`` from a socket that never said hello)."""
        return osc_status(self.port, timeout=timeout)

    def __enter__(self) -> RealServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def pd_with_server(
    server: FakeServer | RealServer, workdir: Path, **kwargs: object
) -> Iterator[tuple[PdSession, int]]:
    """Open ``timbre_transfer.pd`` connected to ``server``; yield (session, reply port)."""
    reply_port = free_udp_port()
    connect = f"ddsp-pd connect 127.0.0.1 {server.port} {reply_port}"
    session = PdSession(MAIN_PATCH, workdir, sends=(connect,), **kwargs)  # type: ignore[arg-type]
    try:
        session.wait_for(rf"^ddsp-pd: connected 127\.0\.0\.1 {server.port}$", timeout=20)
        yield session, reply_port
    finally:
        session.close()


def log_value(match: re.Match[str], cast: Callable[[str], object] = str) -> object:
    """The first group of a log match, cast."""
    return cast(match.group(1))
