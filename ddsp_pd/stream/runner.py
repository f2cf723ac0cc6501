"""Running an engine live: a worker thread behind a callback that never blocks.

An audio callback must return on time whatever the model costs, so :class:`LiveRunner`
hands each input block to a worker thread (a bounded queue) and answers with the output
block the worker finished earlier; the output queue starts with ``buffer_blocks`` blocks of
silence, which is the slack the worker has and the latency the runner adds. When the
worker is late the callback plays silence for that block and counts a dropout (and the
late block, when it comes, is dropped, so the latency stays what it was); when the input
queue is full the block is dropped and counted as an overrun. An exception in the worker
is counted and answered with silence; nothing stops the stream.

A dropout is also counted as a *burst* dropout when the block whose output was due went
in less than half the slack earlier: the callback itself came late (the host woke its
thread late) and then caught up with calls in quick succession, so no worker could have
been on time. On a shared virtual machine a thread that only sleeps is woken up to 24 ms
late a few times a minute (``benchmarks/bench_hiccups.py --period-ms``), which is what
most dropouts there are.

With ``max_buffer_blocks`` above ``buffer_blocks`` the slack adapts: at a dropout the late
block is kept and played when it comes instead of dropped, so the stream goes on one block
later and the slack (and the latency) has grown by one block, up to ``max_buffer_blocks``.
A burst of late callbacks then costs its dropouts once, and the slack it leaves behind is
what covers the next burst of the same length. Past the limit, late blocks are dropped as
with a fixed slack.

:func:`run_file` drives the same runner from a file instead of a device: as fast as the
worker allows (each block waits for its predecessor, like a device that is never late) or
paced in real time (``realtime=True``, where dropouts can happen as live).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ddsp_pd.stream.engine import StreamEngine
from ddsp_pd.stream.heap import settle_heap
from ddsp_pd.stream.priority import request_realtime

__all__ = ["FileRun", "LiveRunner", "default_buffer_blocks", "run_file"]

log = logging.getLogger(__name__)

#: Slack the runner keeps by default: at least this many milliseconds of blocks.
DEFAULT_SLACK_MS = 10.0
#: Input blocks that may wait for the worker before new ones are dropped.
MAX_QUEUED_BLOCKS = 32


def default_buffer_blocks(block: int, rate: int) -> int:
    """Blocks of slack: enough for :data:`DEFAULT_SLACK_MS`, at least one."""
    return max(1, int(np.ceil(DEFAULT_SLACK_MS * rate / 1000.0 / block)))


_playing_lock = threading.Lock()


class LiveRunner:
    """An engine on a worker thread, behind :meth:`callback`.

    ``block`` is the callback's block size (every call must pass that many samples);
    ``buffer_blocks`` the blocks of slack (see the module notes); ``max_buffer_blocks`` the
    most the slack may grow to after dropouts (None: it stays ``buffer_blocks``);
    ``realtime_priority``: the worker asks for real-time scheduling
    (:mod:`ddsp_pd.stream.priority`).
    """

    #: Runners started and not stopped, in this process.
    _playing = 0

    def __init__(
        self,
        engine: StreamEngine,
        block: int,
        buffer_blocks: int | None = None,
        limit_threads: bool = True,
        realtime_priority: bool = True,
        max_buffer_blocks: int | None = None,
    ) -> None:
        self.engine = engine
        self.block = int(block)
        self.buffer_blocks = int(buffer_blocks or default_buffer_blocks(block, engine.host_rate))
        #: The slack the runner started with (``buffer_blocks`` may grow from it).
        self.initial_buffer_blocks = self.buffer_blocks
        self.max_buffer_blocks = max(self.buffer_blocks, int(max_buffer_blocks or 0))
        self.limit_threads = limit_threads
        self.realtime_priority = realtime_priority
        #: Whether the worker got real-time scheduling (known once it runs).
        self.realtime = False
        self._inputs: collections.deque[np.ndarray] = collections.deque()
        self._outputs: collections.deque[np.ndarray] = collections.deque(
            np.zeros(self.block, np.float32) for _ in range(self.buffer_blocks)
        )
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._submitted = 0  # blocks handed in (callback only)
        self._processed = 0  # blocks finished or dropped (worker only)
        self._stop = threading.Event()
        self._ready = threading.Event()  # the worker's set-up is done
        self._counted = False  # among the runners playing (for settle_heap)
        self._debt = 0  # late blocks to drop (their slot was played as silence)
        self._debt_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_error: str | None = None
        self.callbacks = 0
        # When the last buffer_blocks + 1 callbacks came: the first is the one whose block
        # is due now.
        self._called: collections.deque[float] = collections.deque(maxlen=self.buffer_blocks + 1)
        self._burst_window = 0.5 * self.buffer_blocks * self.block / engine.host_rate

    @property
    def latency_samples(self) -> int:
        """Input to output through the runner: the engine's latency plus the slack."""
        return self.engine.latency_samples + self.buffer_blocks * self.block

    @property
    def grown_blocks(self) -> int:
        """Blocks the slack has grown by after dropouts (``max_buffer_blocks``)."""
        return self.buffer_blocks - self.initial_buffer_blocks

    @property
    def max_latency_samples(self) -> int:
        """The latency once the slack has grown to ``max_buffer_blocks``."""
        return self.engine.latency_samples + self.max_buffer_blocks * self.block

    @property
    def dropouts(self) -> int:
        """Blocks answered with silence because the worker was late."""
        return self.engine.stats.dropouts

    @property
    def burst_dropouts(self) -> int:
        """Dropouts in a burst of late callbacks (see the module notes)."""
        return self.engine.stats.burst_dropouts

    @property
    def overruns(self) -> int:
        """Input blocks dropped because the queue was full."""
        return self.engine.stats.overruns

    # ------------------------------------------------------------ lifetime
    def start(self) -> LiveRunner:
        """Start the worker thread (returns ``self``)."""
        if self._thread is None:
            with _playing_lock:
                settle_heap(full=LiveRunner._playing == 0)
                LiveRunner._playing += 1
            self._counted = True
            self._thread = threading.Thread(target=self._work, name="ddsp-live", daemon=True)
            self._thread.start()
            # The worker's set-up (the BLAS limit's first use took 31 ms) must be over
            # before the first callback: otherwise it is a dropout at every stream's start.
            self._ready.wait(5.0)
        return self

    def stop(self) -> None:
        """Stop the worker (waits for the block it is on)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._counted:
            with _playing_lock:
                LiveRunner._playing -= 1
            self._counted = False

    def __enter__(self) -> LiveRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the callback
    def callback(self, block: np.ndarray) -> np.ndarray:
        """Hand in one input block, get one output block; never waits for the worker."""
        self.callbacks += 1
        now = time.perf_counter()
        self._called.append(now)
        stats = self.engine.stats
        if len(self._inputs) >= MAX_QUEUED_BLOCKS:
            stats.overruns += 1
            # This block will never produce an output, so its slot must not consume one:
            # otherwise every overrun takes one block of slack away for good, and after a
            # long stall the stream plays nothing but dropouts.
            with self._debt_lock:
                if self._debt > 0:
                    self._debt -= 1  # one late output fewer to discard; its slot goes on
                else:
                    return np.zeros(len(block), np.float32)
        else:
            self._inputs.append(np.array(block, np.float32).reshape(-1))
            self._submitted += 1
            self._wake.set()
        try:
            return self._outputs.popleft()
        except IndexError:
            stats.dropouts += 1
            called = self._called
            if len(called) == called.maxlen and now - called[0] < self._burst_window:
                stats.burst_dropouts += 1
            if self.buffer_blocks < self.max_buffer_blocks:
                self._grow()
            else:
                with self._debt_lock:
                    self._debt += 1
            return np.zeros(len(block), np.float32)

    def _grow(self) -> None:
        """One block more slack: the late block will be played, one block later."""
        self.buffer_blocks += 1
        self._called = collections.deque(self._called, maxlen=self.buffer_blocks + 1)
        self._burst_window = 0.5 * self.buffer_blocks * self.block / self.engine.host_rate

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until the worker has processed every queued block (for file runs)."""
        target = self._submitted
        with self._done:
            return self._done.wait_for(lambda: self._processed >= target, timeout)

    # ------------------------------------------------------------ the worker
    def _work(self) -> None:
        limiter = None
        try:
            if self.realtime_priority:
                self.realtime = request_realtime()
            if self.limit_threads:
                # Products of a few frames are far too small to share: waking a second BLAS
                # thread for each costs more than it saves, and it steals the other core.
                try:
                    from threadpoolctl import threadpool_limits

                    limiter = threadpool_limits(1)
                except Exception:  # pragma: no cover - threadpoolctl is a dependency
                    limiter = None
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                self._wake.clear()  # before looking: a block queued after this wakes us
                try:
                    block = self._inputs.popleft()
                except IndexError:
                    self._wake.wait(0.1)
                    continue
                try:
                    out = self.engine.process(block)
                except Exception as exc:  # a bug must not stop the stream
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    if self.errors == 1:
                        log.exception("live engine failed on a block; playing silence")
                    out = np.zeros(block.size, np.float32)
                with self._debt_lock:
                    late = self._debt > 0
                    if late:
                        self._debt -= 1
                if not late:
                    self._outputs.append(out)
                with self._done:
                    self._processed += 1
                    self._done.notify_all()
        finally:
            if limiter is not None:
                limiter.restore_original_limits()


@dataclass
class FileRun:
    """The result of :func:`run_file`."""

    audio: np.ndarray
    sample_rate: int
    seconds_audio: float
    seconds_wall: float
    busy_seconds: float
    latency_samples: int
    dropouts: int
    overruns: int
    errors: int
    #: Of the dropouts, those in a burst of late callbacks (:class:`LiveRunner`).
    burst_dropouts: int = 0
    #: Blocks the slack grew by after dropouts (``max_buffer_blocks``); ``latency_samples``
    #: is the latency at the end, after them.
    grown_blocks: int = 0

    @property
    def realtime_factor(self) -> float:
        """Worker time per second of audio (below 1: faster than real time)."""
        return self.busy_seconds / max(self.seconds_audio, 1e-9)

    @property
    def latency_ms(self) -> float:
        """Input-to-output latency in milliseconds."""
        return 1000.0 * self.latency_samples / self.sample_rate


def run_file(
    engine: StreamEngine,
    audio: np.ndarray,
    block: int,
    buffer_blocks: int | None = None,
    realtime: bool = False,
    tail: bool = True,
    on_block: Callable[[int, float], None] | None = None,
    max_buffer_blocks: int | None = None,
    on_start: Callable[[LiveRunner], None] | None = None,
) -> FileRun:
    """Stream mono ``audio`` (at the engine's host rate) through a :class:`LiveRunner`.

    Returns what a listener would hear: the callback's outputs joined, with ``tail``
    enough extra silence fed in for the end of the input to come out. ``on_block(k, t)``
    is called before block k with the stream time t in seconds (notes and controls can be
    sent from there, as from a Pd patch). ``max_buffer_blocks``: the slack may grow after
    dropouts (:class:`LiveRunner`), and what comes out after a dropout is later by a block.
    ``on_start(runner)`` is called once before the first block (to report its latency live).
    """
    x = np.asarray(audio, np.float32).reshape(-1)
    runner = LiveRunner(engine, block, buffer_blocks, max_buffer_blocks=max_buffer_blocks)
    if on_start is not None:
        on_start(runner)
    extra = runner.max_latency_samples if tail else 0
    total = x.size + extra
    n_blocks = -(-total // block)
    padded = np.zeros(n_blocks * block, np.float32)
    padded[: x.size] = x
    outputs = []
    rate = engine.host_rate
    busy_before = engine.stats.busy_seconds
    switch = sys.getswitchinterval()
    if realtime:  # as for a device: the pacing thread must get the interpreter lock quickly
        sys.setswitchinterval(min(switch, 0.001))
    started = time.perf_counter()
    try:
        with runner:
            if realtime:
                # The pacing loop stands for a device's callback thread, which runs real-time.
                failure: list[BaseException] = []
                pacer = threading.Thread(
                    target=_pace_realtime,
                    args=(failure, runner, padded, block, rate, on_block, outputs),
                    name="ddsp-live-clock",
                    daemon=True,
                )
                pacer.start()
                pacer.join()
                if failure:
                    raise failure[0]
            else:
                _drive(runner, padded, block, rate, on_block, outputs, None)
            runner.wait_idle(5.0)
    finally:
        sys.setswitchinterval(switch)
    wall = time.perf_counter() - started
    out = np.concatenate(outputs)[:total] if outputs else np.zeros(0, np.float32)
    return FileRun(
        audio=out,
        sample_rate=rate,
        seconds_audio=n_blocks * block / rate,
        seconds_wall=wall,
        busy_seconds=engine.stats.busy_seconds - busy_before,
        latency_samples=runner.latency_samples,
        dropouts=runner.dropouts,
        overruns=runner.overruns,
        errors=runner.errors,
        burst_dropouts=runner.burst_dropouts,
        grown_blocks=runner.grown_blocks,
    )


def _drive(
    runner: LiveRunner,
    padded: np.ndarray,
    block: int,
    rate: int,
    on_block: Callable[[int, float], None] | None,
    outputs: list[np.ndarray],
    started: float | None,
) -> None:
    """Feed ``padded`` block by block: paced from ``started`` (real time) or each block
    after its predecessor is done (``started`` None)."""
    for k in range(padded.size // block):
        if on_block is not None:
            on_block(k, k * block / rate)
        if started is not None:
            delay = started + k * block / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        outputs.append(runner.callback(padded[k * block : (k + 1) * block]))
        if started is None:
            runner.wait_idle()


def _pace_realtime(failure: list[BaseException], runner: LiveRunner, *args: object) -> None:
    """:func:`_drive` (``runner, *args``) in real time on a real-time thread (where
    allowed); an exception is handed back in ``failure``."""
    if runner.realtime_priority:
        request_realtime()
    try:
        _drive(runner, *args, time.perf_counter())  # type: ignore[arg-type]
    except BaseException as exc:  # re-raised by run_file on the caller's thread
        failure.append(exc)
