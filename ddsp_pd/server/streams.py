"""Live audio streams of ``ddsp-pd serve``: one :class:`~ddsp_pd.stream.StreamEngine` per
client stream, fed by ``/ddsp/stream/block`` and answered by ``/ddsp/stream/audio``.

A stream is keyed by (sender host, sender port, ID) and every reply of a stream goes to the
sender's address (``[netsend -u -b]`` hears its own socket). Threads: the receiving thread
only checks, decodes and queues (a bounded queue per stream; a full one drops its oldest
block, counted ``overruns``); one stream worker thread owns the engines, processes the
queued blocks of all streams in arrival order, opens (and warms up) engines, sends the
statistics every second and closes streams that stopped sending. Sequence numbers are
handled on the worker, in arrival order, so the result depends only on what arrived in which
order: a gap is concealed (blocks of silence, counted ``lost``), an older SEQ is dropped
(``late`` if it was concealed, else ``duplicates``). Audio replies leave at once from the
server socket (:meth:`ReplySender.send_now`), past the pacing of control replies.

The protocol: docs/osc.md, "Streams".
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsp_pd.errors import CheckpointError, DdspPdError
from ddsp_pd.server.clients import BusyError
from ddsp_pd.server.replies import ReplySender, Target, encode
from ddsp_pd.server.state import describe

if TYPE_CHECKING:
    from ddsp_pd.server.handlers import Handlers
    from ddsp_pd.stream.engine import StreamEngine
    from ddsp_pd.stream.models import LiveModel

log = logging.getLogger(__name__)

#: Streams open at once at most (all senders together).
MAX_STREAMS = 8
#: Blocks queued per stream; one more drops the oldest (counted ``overruns``).
QUEUE_BLOCKS = 64
#: Seconds without a block after which a stream is closed and freed.
DEFAULT_STREAM_EXPIRY = 5.0
#: Seconds between two ``/ddsp/stream/stats`` of a stream.
STATS_PERIOD = 1.0
#: A SEQ gap of more than this much audio resynchronises instead of concealing.
RESYNC_SECONDS = 2.0
MIN_ID, MAX_ID = 1, 1 << 24
MIN_BLOCK, MAX_BLOCK = 32, 2048
MIN_RATE, MAX_RATE = 8000, 192000
#: SEQ is below this (Pd's floats count exactly up to 2**24).
SEQ_LIMIT = 1 << 24
MODES = ("audio", "midi")
#: Server controls that act on every open stream (``StreamEngine.set_control`` names).
STREAM_CONTROLS = frozenset(
    ("octave", "loudness", "confidence", "adjust", "quiet", "autotune", "note_threshold", "seed")
)
STREAM_PREFIX = "/ddsp/stream/"
BLOCK_ADDRESS = STREAM_PREFIX + "block"
#: ``/ddsp/stream/block`` padded to a multiple of 4 bytes, as it starts every block datagram.
BLOCK_PREFIX = b"/ddsp/stream/block\0\0"
_AUDIO_ADDRESS = b"/ddsp/stream/audio\0\0"
#: Seconds the worker sleeps at most between two looks at the clock (stats, expiry).
_TICK = 0.05


class StreamError(DdspPdError):
    """A stream request the server cannot use (bad values, unknown stream, bad block)."""

    code = "stream"


def is_stream_address(address: str) -> bool:
    """Whether ``address`` belongs to the stream namespace (its errors are ``stream``
    errors and go to the sender's own address)."""
    return address.startswith(STREAM_PREFIX) or address == "/ddsp/note"


def as_stream_error(exc: BaseException) -> BaseException:
    """A request error of the stream namespace, as the ``stream`` error it is reported as;
    ``busy``, ``checkpoint`` and unexpected (``internal``) errors stay what they are."""
    if isinstance(exc, DdspPdError) and exc.code not in ("stream", "busy", "checkpoint"):
        return StreamError(exc.message)
    return exc


# --- argument checks (receiving thread) -------------------------------------------------------
def _whole(address: str, what: str, raw: object, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, np.floating, np.integer)):
        raise StreamError(f"{address}: {what} must be a number, got {describe(raw)}")
    value = float(raw)
    if not math.isfinite(value) or value != math.floor(value):
        raise StreamError(f"{address}: {what} must be a whole number, got {raw}")
    if not low <= value <= high:
        raise StreamError(f"{address}: {what} {value:g} is out of range [{low}, {high}]")
    return int(value)


def as_stream_id(address: str, raw: object) -> int:
    """A stream ID: a whole number in [1, 16777216]."""
    return _whole(address, "stream ID", raw, MIN_ID, MAX_ID)


def as_seq(address: str, raw: object) -> int:
    """A block's sequence number: a whole number in [0, 2**24)."""
    return _whole(address, "SEQ", raw, 0, SEQ_LIMIT - 1)


def as_block_size(address: str, raw: object) -> int:
    """Samples per block: a whole number in [32, 2048]."""
    return _whole(address, "block size", raw, MIN_BLOCK, MAX_BLOCK)


def as_rate(address: str, raw: object) -> int:
    """The client's sample rate: a whole number in [8000, 192000]."""
    return _whole(address, "sample rate", raw, MIN_RATE, MAX_RATE)


def as_mode(address: str, raw: object) -> str:
    """``audio`` or ``midi``."""
    if raw not in MODES:
        raise StreamError(f"{address}: mode must be 'audio' or 'midi', got {describe(raw)}")
    return str(raw)


def as_number(address: str, raw: object) -> float:
    """Any finite number (range checks are the engine's)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise StreamError(f"{address} takes numbers, got {describe(raw)}")
    if not math.isfinite(float(raw)):
        raise StreamError(f"{address} takes finite numbers, got {raw}")
    return float(raw)


def as_samples(address: str, raw: list[Any]) -> np.ndarray:
    """A block's samples from decoded OSC arguments (numbers only; non-finite ones are 0)."""
    for index, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StreamError(f"{address}: sample {index + 1} is {describe(value)}, not a number")
    return clean(np.asarray(raw, np.float32))


def clean(samples: np.ndarray) -> np.ndarray:
    """``samples`` as float32 with NaN and infinities zeroed."""
    x = np.asarray(samples, np.float32)
    return x if np.all(np.isfinite(x)) else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def decode_block(data: bytes) -> tuple[float, float, np.ndarray] | None:
    """(ID, SEQ, samples) of a ``/ddsp/stream/block`` datagram whose arguments are all
    ``i``/``f``, decoded with numpy in one go; None for anything else (the generic OSC
    decoder then handles it and reports what is wrong)."""
    if not data.startswith(BLOCK_PREFIX) or data[20:21] != b",":
        return None
    end = data.find(b"\0", 21)
    if end < 0:
        return None
    tags = data[21:end]
    count = len(tags)
    start = (end // 4 + 1) * 4
    if count < 2 or len(data) != start + 4 * count or tags.translate(None, b"if"):
        return None
    words = np.frombuffer(data, ">u4", count=count, offset=start)
    values = words.view(">f4").astype(np.float64)
    is_int = np.frombuffer(tags, np.uint8) == ord("i")
    if is_int.any():
        values[is_int] = words[is_int].view(">i4")
    return float(values[0]), float(values[1]), clean(values[2:])


def _audio_header(block: int) -> bytes:
    tags = b",ii" + b"f" * block
    tags += b"\0" * (4 - len(tags) % 4)
    return _AUDIO_ADDRESS + tags


# --- the streams ---------------------------------------------------------------------------------
@dataclass(eq=False)
class Stream:
    """One open stream. The worker owns the engine and the sequence state; the receiving
    thread touches only ``queue``, ``last_block`` and ``overruns`` (under the table lock)."""

    sender: Target
    ident: int
    block: int
    rate: int
    mode: str
    engine: StreamEngine
    #: The model's response to an attack after the engine's latency (samples at ``rate``).
    response: int = 0
    queue: deque[tuple[int, int, np.ndarray]] = field(default_factory=deque)
    next_seq: int = 0
    blocks: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    overruns: int = 0
    last_block: float = 0.0
    next_stats: float = 0.0
    window_busy: float = 0.0
    window_samples: int = 0
    #: Concealed SEQs not yet arrived late (pruned to the resync window).
    concealed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.header = _audio_header(self.block)
        self.resync_blocks = math.ceil(RESYNC_SECONDS * self.rate / self.block)
        self.silence = np.zeros(self.block, np.float32)

    @property
    def key(self) -> tuple[str, int, int]:
        """(sender host, sender port, ID)."""
        return (self.sender[0], self.sender[1], self.ident)

    @property
    def latency(self) -> int:
        """Input to output in client samples as a listener hears it: the engine's
        algorithmic latency plus the model's response (:mod:`ddsp_pd.stream.response`)."""
        return int(self.engine.latency_samples) + int(self.response)


@dataclass
class _Open:
    sender: Target
    ident: int
    block: int
    rate: int
    mode: str


@dataclass
class _Close:
    key: tuple[str, int, int]


@dataclass
class _Rebuild:
    pass


class StreamService:
    """The stream table, the receiving side's requests and the stream worker thread."""

    def __init__(
        self,
        handlers: Handlers,
        replies: ReplySender,
        expiry: float = DEFAULT_STREAM_EXPIRY,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        if expiry <= 0 or max_streams < 1:
            raise ValueError(f"bad stream limits: expiry {expiry}, max {max_streams}")
        self.handlers = handlers
        self.replies = replies
        self.expiry = float(expiry)
        self.max_streams = int(max_streams)
        self._cond = threading.Condition()
        self._streams: dict[tuple[str, int, int], Stream] = {}
        self._commands: deque[_Open | _Close | _Rebuild] = deque()
        self._arrivals = 0
        self._busy = False  # the worker is running a command or a block
        self._stopping = False
        self._live: tuple[Any, LiveModel] | None = None  # (the server's model object, wrapped)
        self._responses: dict[tuple[int, int, str], int] = {}
        self._thread = threading.Thread(target=self._run, name="ddsp-streams", daemon=True)

    # --- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the stream worker."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the worker and free every stream (their senders hear ``closed``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            streams = list(self._streams.values())
            self._streams.clear()
            self._commands.clear()
        for stream in streams:
            self._send(stream.sender, "/ddsp/stream/closed", stream.ident)
        self._live = None

    def __len__(self) -> int:
        with self._cond:
            return len(self._streams)

    def get(self, sender: Target, ident: int) -> Stream | None:
        """The open stream of ``sender`` with this ID (for tests and inspection)."""
        with self._cond:
            return self._streams.get((sender[0], sender[1], ident))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no command or block is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._commands or any(s.queue for s in self._streams.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _TICK))
            return True

    # --- requests (receiving thread) ----------------------------------------------------------
    def open(self, sender: Target, ident: int, block: int, rate: int, mode: str) -> None:
        """``/ddsp/stream/open``: the worker builds the engine and answers ``opened``."""
        with self._cond:
            key = (sender[0], sender[1], ident)
            if key not in self._streams and len(self._streams) >= self.max_streams:
                raise self._busy_error()
            self._commands.append(_Open(sender, ident, block, rate, mode))
            self._cond.notify_all()

    def close(self, sender: Target, ident: int) -> None:
        """``/ddsp/stream/close``: the worker frees the stream and answers ``closed``."""
        with self._cond:
            key = (sender[0], sender[1], ident)
            if key not in self._streams:
                raise StreamError(f"/ddsp/stream/close: no open stream {ident} from this sender")
            self._commands.append(_Close(key))
            self._cond.notify_all()

    def block(self, sender: Target, ident: int, seq: int, samples: np.ndarray) -> None:
        """``/ddsp/stream/block``: queue it (a wrong one is refused and so counts missing)."""
        with self._cond:
            stream = self._streams.get((sender[0], sender[1], ident))
            if stream is None:
                raise StreamError(f"/ddsp/stream/block: no open stream {ident} from this sender")
            if samples.size != stream.block:
                raise StreamError(
                    f"/ddsp/stream/block: stream {ident} takes {stream.block} samples per "
                    f"block, got {samples.size}"
                )
            stream.last_block = time.monotonic()
            if len(stream.queue) >= QUEUE_BLOCKS:
                stream.queue.popleft()
                stream.overruns += 1
            stream.queue.append((self._arrivals, seq, samples))
            self._arrivals += 1
            self._cond.notify_all()

    def note(self, sender: Target, ident: int, pitch: float, velocity: float) -> None:
        """``/ddsp/stream/note``: a note on (velocity 0: off) for one midi-mode stream."""
        engine = self._midi_engine(sender, ident, "/ddsp/stream/note")
        self._note(engine, pitch, velocity)

    def note_all(self, sender: Target, pitch: float, velocity: float) -> None:
        """``/ddsp/note``: a note for every midi-mode stream of ``sender`` (or, when it has
        none, of its host: a patch may send notes on its control connection)."""
        with self._cond:
            streams = [s for s in self._streams.values() if s.mode == "midi"]
        own = [s for s in streams if s.sender == sender]
        chosen = own or [s for s in streams if s.sender[0] == sender[0]]
        if not chosen:
            raise StreamError("/ddsp/note: no midi-mode stream is open from this client")
        for stream in chosen:
            self._note(stream.engine, pitch, velocity)

    def bend(self, sender: Target, ident: int, amount: float) -> None:
        """``/ddsp/stream/bend``: pitch bend in [-1, 1] of a midi-mode stream."""
        engine = self._midi_engine(sender, ident, "/ddsp/stream/bend")
        engine.bend(amount)

    def adsr(self, sender: Target, ident: int, a: float, d: float, s: float, r: float) -> None:
        """``/ddsp/stream/adsr``: the envelope of a midi-mode stream."""
        engine = self._midi_engine(sender, ident, "/ddsp/stream/adsr")
        engine.set_adsr(a, d, s, r)

    @staticmethod
    def _note(engine: StreamEngine, pitch: float, velocity: float) -> None:
        if velocity == 0 and 0 <= pitch <= 127:
            engine.note_off(pitch)
        else:
            engine.note_on(pitch, velocity)

    def _midi_engine(self, sender: Target, ident: int, address: str) -> StreamEngine:
        with self._cond:
            stream = self._streams.get((sender[0], sender[1], ident))
        if stream is None:
            raise StreamError(f"{address}: no open stream {ident} from this sender")
        if stream.mode != "midi":
            raise StreamError(f"{address}: stream {ident} is in audio mode, not midi")
        return stream.engine

    # --- server state (handlers) --------------------------------------------------------------
    def set_control(self, key: str, value: float | int) -> None:
        """A server control changed: every open stream follows from its next frame. The
        caller holds the worker's lock (so a stream being opened cannot miss it)."""
        if key not in STREAM_CONTROLS:
            return
        with self._cond:
            engines = [s.engine for s in self._streams.values()]
        for engine in engines:
            try:
                engine.set_control(key, bool(value) if key == "adjust" else value)
            except DdspPdError as exc:
                log.warning("stream control %s %s refused: %s", key, value, exc.message)

    def model_changed(self) -> None:
        """A new checkpoint is the current model: rebuild every stream on it."""
        with self._cond:
            if self._streams:
                self._commands.append(_Rebuild())
                self._cond.notify_all()

    # --- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        from ddsp_pd.stream.priority import request_realtime

        # Blocks are due in real time; a render on the other worker must not delay them.
        self.realtime = request_realtime()
        next_tick = time.monotonic()
        while True:
            with self._cond:
                self._busy = False
                while True:
                    if self._stopping:
                        self._cond.notify_all()
                        return
                    now = time.monotonic()
                    if self._commands or now >= next_tick:
                        break
                    if any(s.queue for s in self._streams.values()):
                        break
                    self._cond.notify_all()  # wait_idle
                    self._cond.wait(next_tick - now)
                self._busy = True
                command = self._commands.popleft() if self._commands else None
                picked = None if command is not None else self._oldest_block()
            try:
                if command is not None:
                    self._command(command)
                elif picked is not None:
                    self._process(*picked)
                if time.monotonic() >= next_tick:
                    self._tick(time.monotonic())
                    next_tick = time.monotonic() + _TICK
            except Exception:
                log.exception("stream worker error")
            # Drop the references, so a freed stream's engine goes now.
            command = picked = None

    def _oldest_block(self) -> tuple[Stream, int, np.ndarray] | None:
        """The block that arrived first among the heads of the queues (lock held)."""
        heads = [s for s in self._streams.values() if s.queue]
        if not heads:
            return None
        stream = min(heads, key=lambda s: s.queue[0][0])
        _, seq, samples = stream.queue.popleft()
        return stream, seq, samples

    def _command(self, command: _Open | _Close | _Rebuild) -> None:
        if isinstance(command, _Open):
            self._open(command)
        elif isinstance(command, _Close):
            with self._cond:
                stream = self._streams.pop(command.key, None)
            if stream is not None:
                log.info("stream %d of %s:%d closed", stream.ident, *stream.sender)
                self._send(stream.sender, "/ddsp/stream/closed", stream.ident)
        else:
            self._rebuild()

    def _process(self, stream: Stream, seq: int, samples: np.ndarray) -> None:
        """One arrived block, in SEQ order: conceal a gap, drop what is late or repeated."""
        expected = stream.next_seq
        if seq < expected and expected - seq <= stream.resync_blocks:
            if seq in stream.concealed:
                stream.concealed.discard(seq)
                stream.late += 1
            else:
                stream.duplicates += 1
            return
        gap = seq - expected
        if gap > stream.resync_blocks or gap < 0:
            # The client jumped far (or restarted its count): carry on from its SEQ.
            log.info("stream %d of %s:%d resynchronised at SEQ %d (expected %d)",
                     stream.ident, *stream.sender, seq, expected)  # fmt: skip
            stream.lost += max(gap, 0)
            stream.concealed.clear()
        else:
            for missing in range(expected, seq):
                self._run_block(stream, missing, stream.silence)
                stream.lost += 1
                stream.concealed.add(missing)
        self._run_block(stream, seq, samples)
        stream.next_seq = seq + 1
        if len(stream.concealed) > 4 * stream.resync_blocks + 64:
            oldest = stream.next_seq - stream.resync_blocks
            stream.concealed = {s for s in stream.concealed if s >= oldest}

    def _run_block(self, stream: Stream, seq: int, samples: np.ndarray) -> None:
        started = time.perf_counter()
        out = stream.engine.process(samples)
        stream.window_busy += time.perf_counter() - started
        stream.window_samples += samples.size
        stream.blocks += 1
        samples_out = clean(out).astype(">f4").tobytes()
        data = stream.header + struct.pack(">ii", stream.ident, seq) + samples_out
        self.replies.send_now(stream.sender, data)

    def _tick(self, now: float) -> None:
        """Statistics every second, and the streams that stopped sending closed."""
        with self._cond:
            streams = list(self._streams.values())
        for stream in streams:
            if now - stream.last_block > self.expiry:
                with self._cond:
                    if self._streams.get(stream.key) is stream:
                        del self._streams[stream.key]
                log.info("stream %d of %s:%d expired (no block for %g s)",
                         stream.ident, *stream.sender, self.expiry)  # fmt: skip
                self._send(stream.sender, "/ddsp/stream/closed", stream.ident)
            elif now >= stream.next_stats:
                audio = stream.window_samples / stream.rate
                rtf = stream.window_busy / audio if audio > 0 else 0.0
                stream.window_busy, stream.window_samples = 0.0, 0
                stream.next_stats = now + STATS_PERIOD
                self._send(stream.sender, "/ddsp/stream/stats", stream.ident, stream.blocks,
                           stream.lost, stream.late, stream.duplicates, stream.overruns,
                           float(rtf), stream.latency)  # fmt: skip

    # --- engines -------------------------------------------------------------------------------
    def _open(self, command: _Open) -> None:
        sender = command.sender
        key = (sender[0], sender[1], command.ident)
        with self._cond:
            existing = self._streams.get(key)
            # A client that asks again while the first open is being built (the first
            # model of a server takes a second or more) must not reset the stream it is
            # about to send to: with no block processed yet, a reset would change nothing
            # but drop the blocks already on their way.
            same = existing is not None and (existing.block, existing.rate, existing.mode) == (
                command.block, command.rate, command.mode)  # fmt: skip
            if same and existing.blocks == 0:
                existing.last_block = time.monotonic()
                self._send(sender, "/ddsp/stream/opened", command.ident, existing.latency,
                           command.block, command.rate)  # fmt: skip
                return
        try:
            engine, used, response = self._build(command.rate, command.mode)
            stream = Stream(sender, command.ident, command.block, command.rate, command.mode,
                            engine, response)  # fmt: skip
            # Lock order as in Handlers.set_control: the worker's lock, then the table's.
            with self.handlers.worker.lock:
                now_values = dict(self.handlers.state.values)
                with self._cond:
                    if key not in self._streams and len(self._streams) >= self.max_streams:
                        raise self._busy_error()
                    now = time.monotonic()
                    stream.last_block = now
                    stream.next_stats = now + STATS_PERIOD
                    self._streams[key] = stream
                    # Controls changed while the engine was built: they apply from frame 0.
                    for name in STREAM_CONTROLS:
                        if now_values.get(name) != used.get(name):
                            value = now_values[name]
                            engine.set_control(name, bool(value) if name == "adjust" else value)
        except Exception as exc:
            self.handlers.error(sender, as_stream_error(exc))
            return
        log.info("stream %d of %s:%d opened (%s, block %d at %d Hz, latency %d samples)",
                 command.ident, *sender, command.mode, command.block, command.rate,
                 stream.latency)  # fmt: skip
        self._send(sender, "/ddsp/stream/opened", command.ident, stream.latency, command.block,
                   command.rate)  # fmt: skip

    def _rebuild(self) -> None:
        """Every stream on the current model; SEQ and counts go on, ``opened`` again."""
        with self._cond:
            streams = list(self._streams.values())
        for stream in streams:
            try:
                engine, used, response = self._build(stream.rate, stream.mode)
            except Exception as exc:
                with self._cond:
                    if self._streams.get(stream.key) is stream:
                        del self._streams[stream.key]
                self.handlers.error(stream.sender, as_stream_error(exc))
                self._send(stream.sender, "/ddsp/stream/closed", stream.ident)
                continue
            with self.handlers.worker.lock:
                now_values = dict(self.handlers.state.values)
                with self._cond:
                    stream.engine = engine
                    stream.response = response
                    for name in STREAM_CONTROLS:
                        if now_values.get(name) != used.get(name):
                            value = now_values[name]
                            engine.set_control(name, bool(value) if name == "adjust" else value)
            self._send(stream.sender, "/ddsp/stream/opened", stream.ident, stream.latency,
                       stream.block, stream.rate)  # fmt: skip

    def _build(self, rate: int, mode: str) -> tuple[StreamEngine, dict[str, Any], int]:
        """A warmed-up engine on the server's current model with its current controls, the
        control values it was built with, and the model's response in samples (measured
        once per model, rate and mode)."""
        from ddsp_pd.controls import ControlSettings
        from ddsp_pd.stream.engine import EngineSettings, StreamEngine

        with self.handlers.worker.lock:
            info = self.handlers.state.model
            values = dict(self.handlers.state.values)
        if info is None:
            raise CheckpointError("no checkpoint loaded yet")
        live = self._live_model(info)
        controls = ControlSettings(
            octave=float(values["octave"]),
            loudness_db=float(values["loudness"]),
            confidence=float(values["confidence"]),
            adjust=bool(values["adjust"]),
            quiet=float(values["quiet"]),
            autotune=float(values["autotune"]),
            note_threshold=float(values["note_threshold"]),
        )
        settings = EngineSettings(controls=controls, mode=mode, seed=int(values["seed"]))
        engine = StreamEngine(live, rate, settings)
        # Compiles the kernels on the first stream, here rather than on its first block.
        engine.warm_up()
        from ddsp_pd.stream.heap import settle_heap

        with self._cond:
            playing = bool(self._streams)
        settle_heap(full=not playing)  # no full collection walking the server mid-stream
        key = (id(live), rate, mode)
        if key not in self._responses:
            from ddsp_pd.stream.response import model_response_samples

            # Measured on a scratch engine: a few tenths of a second, once per model.
            self._responses = {k: v for k, v in self._responses.items() if k[0] == id(live)}
            self._responses[key] = model_response_samples(live, rate, settings)
        return engine, values, self._responses[key]

    def _live_model(self, info: Any) -> LiveModel:
        """The server's loaded model (loaded once, by the render engine), ready to stream."""
        from ddsp_pd.stream.models import live_model_from, open_live_model

        loaded = self.handlers.engine.load_model(info.path)
        model = getattr(loaded, "model", None)
        if self._live is not None and self._live[0] is model:
            return self._live[1]
        try:
            live = live_model_from(
                model,
                name=info.name,
                statistics=getattr(loaded, "statistics", None),
                statistics_problem=getattr(loaded, "statistics_problem", None),
            )
        except CheckpointError:
            # A model object the server renders with but that cannot stream as it is.
            live = open_live_model(info.path)
        self._live = (model, live)
        return live

    # --- replies --------------------------------------------------------------------------------
    def _send(self, target: Target, address: str, *args: Any) -> None:
        try:
            data = encode(address, args)
        except (ValueError, OverflowError, TypeError) as exc:
            log.error("cannot encode reply %s: %s", address, exc)
            return
        self.replies.send_now(target, data)

    def _busy_error(self) -> BusyError:
        return BusyError(
            f"/ddsp/stream/open: {self.max_streams} streams are open already; close one "
            f"(streams close {self.expiry:g} s after their last block)"
        )
