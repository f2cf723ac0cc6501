"""Helpers for the server tests: a fast stand-in engine, an OSC client that waits for replies.

Imported by the other ``test_server_*`` modules; it holds no tests itself.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from ddsp_pd.errors import CancelledError, CheckpointError, InputError
from ddsp_pd.server.app import OscService, ServerConfig
from ddsp_pd.server.state import RenderParams

HOP = 64
MODEL_RATE = 16000
FRAME_RATE = MODEL_RATE / HOP
#: Seconds a test waits for one reply before failing.
REPLY_TIMEOUT = 10.0


# --- the stand-in engine ---------------------------------------------------------------------
@dataclass
class FakeEngine:
    """Behaves like :class:`ddsp_pd.transfer.Engine` for the server, in milliseconds.

    Settings are the server's :class:`RenderParams` (the tests inject an identity settings
    factory). Rendering makes a sine at 440 Hz * 2**octave for the input's duration. When
    ``gate`` is given, the model stage waits for it (polling ``should_stop``), so a test can
    change the state while a render is provably running.
    """

    stage_delay: float = 0.0
    load_delay: float = 0.0
    gate: threading.Event | None = None
    rendered: list[RenderParams] = field(default_factory=list)
    stopped: list[RenderParams] = field(default_factory=list)
    loads: list[Path] = field(default_factory=list)
    feature_calls: int = 0

    def load_model(self, checkpoint: Any) -> Any:
        path = Path(checkpoint)
        time.sleep(self.load_delay)
        if not path.is_dir() or not any(path.glob("*.index")):
            raise CheckpointError(f"not a checkpoint: {path}")
        if (path / "corrupt").exists():
            raise CheckpointError(f"{path.name} is corrupt: unreadable index")
        if (path / "explode").exists():
            raise RuntimeError("simulated bug while loading")
        self.loads.append(path)
        config = SimpleNamespace(era="2.x", sample_rate=MODEL_RATE, frame_rate=FRAME_RATE, hop=HOP)
        return SimpleNamespace(
            name=path.name,
            checkpoint=SimpleNamespace(path=path),
            model=SimpleNamespace(config=config),
        )

    def features_for(self, input_path: Any, loaded: Any) -> tuple[Any, int]:
        self.feature_calls += 1
        try:
            audio, rate = sf.read(str(input_path), dtype="float32", always_2d=True)
        except Exception as exc:
            raise InputError(f"{input_path} is not audio") from exc
        mono = audio.mean(axis=1)
        if not np.any(mono):
            raise InputError(f"{input_path} is silent")
        n = max(1, int(len(mono) * MODEL_RATE / rate) // HOP)
        frames = np.arange(n, dtype=np.float32)
        features = SimpleNamespace(
            f0_hz=(220.0 + frames).astype(np.float32),
            f0_confidence=((frames % 10) / 10).astype(np.float32),
            loudness_db=(-60.0 + (frames % 50)).astype(np.float32),
        )
        return features, int(rate)

    def adjust(self, features: Any, loaded: Any, settings: RenderParams) -> Any:
        mask = features.loudness_db > -40.0
        ran = bool(settings.adjust)
        report = SimpleNamespace(
            adjust_ran=ran,
            reason="ok" if ran else "disabled",
            note_segments=int(np.count_nonzero(np.diff(mask.astype(int)) == 1)),
            notes_detected=int(mask.sum()),
            auto_octave=1.0 if ran else 0.0,
            tuning_factor=0.25 if settings.autotune > 0 else None,
        )
        return SimpleNamespace(
            f0_hz=(features.f0_hz * 2.0**settings.octave).astype(np.float32),
            loudness_db=(features.loudness_db + settings.loudness).astype(np.float32),
            mask_on=mask,
            report=report,
        )

    def _stage(self, name: str, progress: Any, should_stop: Any, settings: RenderParams) -> None:
        if should_stop is not None and should_stop():
            self.stopped.append(settings)
            raise CancelledError("render cancelled")
        if progress is not None:
            progress(name, 0.0)
        time.sleep(self.stage_delay)

    def render(
        self,
        loaded: Any,
        settings: RenderParams,
        *,
        input_path: Any = None,
        features_path: Any = None,
        progress: Any = None,
        should_stop: Any = None,
    ) -> Any:
        self._stage("features", progress, should_stop, settings)
        features, rate = self.features_for(input_path, loaded)
        self._stage("controls", progress, should_stop, settings)
        adjusted = self.adjust(features, loaded, settings)
        self._stage("model", progress, should_stop, settings)
        if self.gate is not None:
            while not self.gate.wait(0.01):
                if should_stop():
                    self.stopped.append(settings)
                    raise CancelledError("render cancelled")
        if should_stop is not None and should_stop():
            self.stopped.append(settings)
            raise CancelledError("render cancelled")
        out_rate = settings.samplerate or rate
        n = round(len(features.f0_hz) * HOP * out_rate / MODEL_RATE)
        t = np.arange(n) / out_rate
        audio = (0.5 * np.sin(2 * np.pi * 440.0 * 2.0**settings.octave * t)).astype(np.float32)
        gain_db = 0.0
        if settings.normalize:
            gain_db = float(20 * np.log10(10 ** (-1 / 20) / 0.5))
            audio = (audio * 10 ** (gain_db / 20)).astype(np.float32)
        if progress is not None:
            progress("model", 1.0)
        self.rendered.append(settings)
        return SimpleNamespace(
            audio=audio,
            sample_rate=int(out_rate),
            features=features,
            adjusted=adjusted,
            gain_db=gain_db,
        )


def identity_settings(params: RenderParams) -> RenderParams:
    """The fake engine takes the server's own snapshot as its settings."""
    return params


# --- files -----------------------------------------------------------------------------------
def write_tone(path: Path, seconds: float = 0.5, rate: int = 16000, freq: float = 330.0) -> Path:
    """A short sine WAV to use as input."""
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def make_checkpoints(root: Path, names: tuple[str, ...] = ("alpha", "beta")) -> Path:
    """Folders that the catalog recognises as checkpoints (they hold an ``.index`` file)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).mkdir()
        (root / name / "ckpt-1.index").write_bytes(b"")
    return root


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    """The frequency of the largest FFT bin (Hz)."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


# --- the client --------------------------------------------------------------------------------
@dataclass
class Reply:
    """One message the client received."""

    address: str
    args: list[Any]
    types: str
    source: tuple[str, int]
    size: int


class OscClient:
    """A UDP OSC client on 127.0.0.1 that records every reply and can wait for one."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.replies: list[Reply] = []
        self.undecodable = 0
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                msg = OscMessage(data)
                reply = Reply(msg.address, list(msg.params), _type_tags(data), source, len(data))
            except Exception:
                with self._cond:
                    self.undecodable += 1
                continue
            with self._cond:
                self.replies.append(reply)
                self._cond.notify_all()

    def close(self) -> None:
        self._running = False
        self._thread.join(2.0)
        self.sock.close()

    # sending
    def send(self, address: str, *args: Any) -> None:
        """Send one message with explicit types: int -> i, float -> f, str -> s, bytes -> b."""
        self.send_raw(build(address, *args))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    # waiting
    def mark(self) -> int:
        """The index of the next reply (wait for replies after it)."""
        with self._cond:
            return len(self.replies)

    def wait_for(
        self,
        address: str,
        since: int = 0,
        timeout: float = REPLY_TIMEOUT,
        where: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        """The first reply to ``address`` (matching ``where``) at index >= ``since``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for reply in self.replies[since:]:
                    if reply.address == address and (where is None or where(reply)):
                        return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.address, r.args) for r in self.replies[since:]][-20:]
                    raise AssertionError(f"no {address} within {timeout} s; last replies: {seen}")
                self._cond.wait(left)

    def since(self, index: int, address: str | None = None) -> list[Reply]:
        """Replies from ``index`` on (to ``address`` only, if given)."""
        with self._cond:
            return [r for r in self.replies[index:] if address is None or r.address == address]

    def request(
        self, address: str, *args: Any, reply: str, timeout: float = REPLY_TIMEOUT
    ) -> Reply:
        """Send and wait for the first ``reply`` after it."""
        start = self.mark()
        self.send(address, *args)
        return self.wait_for(reply, start, timeout)

    def status(self) -> dict[str, Any]:
        """``/ddsp/status`` as a dict (waits for ``end``)."""
        start = self.mark()
        self.send("/ddsp/status")
        self.wait_for("/ddsp/state", start, where=lambda r: r.args[0] == "end")
        result = {}
        for r in self.since(start, "/ddsp/state"):
            if r.args[0] == "end":
                break
            result[r.args[0]] = r.args[1]
        return result

    def ping(self, timeout: float = REPLY_TIMEOUT) -> Reply:
        return self.request("/ddsp/ping", reply="/ddsp/pong", timeout=timeout)


def build(address: str, *args: Any) -> bytes:
    """An OSC message with the type of each argument chosen from its Python type."""
    b = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_TRUE if a else OscMessageBuilder.ARG_TYPE_FALSE)
        elif isinstance(a, int):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(a, float):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_FLOAT)
        elif isinstance(a, str):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_STRING)
        elif isinstance(a, bytes):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_BLOB)
        elif a is None:
            b.add_arg(None, OscMessageBuilder.ARG_TYPE_NIL)
        else:
            b.add_arg(a)
    return b.build().dgram


def _type_tags(data: bytes) -> str:
    """The type tag string of a raw OSC message (after the padded address)."""
    end = data.index(b"\0")
    start = (end // 4 + 1) * 4
    tag_end = data.index(b"\0", start)
    return data[start + 1 : tag_end].decode()


# --- a running service ---------------------------------------------------------------------------
@contextlib.contextmanager
def running_service(
    tmp: Path,
    engine: Any | None = None,
    preload: str | None = "alpha",
    **config: Any,
) -> Iterator[tuple[OscService, OscClient, Any]]:
    """Start a service on a free port with the fake engine; stop it (and the client) after."""
    engine = engine or FakeEngine()
    ckpts = tmp / "checkpoints"
    if not ckpts.exists():
        make_checkpoints(ckpts)
    config.setdefault("output_dir", tmp / "out")
    config.setdefault("host", "127.0.0.1")
    cfg = ServerConfig(port=0, checkpoint_dirs=[ckpts], **config)
    service = OscService(engine, cfg, settings_factory=identity_settings)
    client = None
    try:
        if preload is not None:
            service.preload(preload)
        service.start()
        client = OscClient(("127.0.0.1", service.address[1]))
        yield service, client, engine
    finally:
        service.stop()
        if client is not None:
            client.close()


def is_close(a: float, b: float, tol: float = 1e-6) -> bool:
    """Float comparison for values that went through OSC's 32-bit floats."""
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def settle(service: OscService, client: OscClient, timeout: float = REPLY_TIMEOUT) -> None:
    """Wait until the server has handled everything sent and its worker is idle.

    The first ping proves every earlier request was handled (one receiving thread, in
    order); the second, sent once the worker is idle, arrives after every reply the worker
    queued (one sending queue, in order).
    """
    client.ping(timeout)
    assert service.worker.wait_idle(timeout), "the worker did not become idle"
    client.ping(timeout)
