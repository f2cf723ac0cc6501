"""The one background thread that loads checkpoints, writes feature files and renders.

Renders are never queued: there is at most one wanted render, made from the state as it is
when the worker starts it. Every render-relevant change bumps a generation counter; a
running render whose generation is no longer current stops at its next stage (the engine
polls ``should_stop``), is never reported, and - because a render was still wanted - is
started again from the new state. ``/ddsp/cancel`` drops the wanted render and stops the
running one.

All mutators take the worker's lock themselves; the lock is re-entrant so the request
handlers can hold it around a state change and the matching :meth:`Worker.changed`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from ddsp_pd.server.replies import Target
from ddsp_pd.server.state import RenderParams

log = logging.getLogger(__name__)


@dataclass
class RenderJob:
    """One render attempt: where its replies go, its frozen settings, its generation."""

    target: Target
    params: RenderParams
    generation: int
    cancelled: bool = False
    cancel_target: Target | None = None
    published: bool = False


@dataclass
class LoadJob:
    """Load a checkpoint; only the newest request is applied and reported."""

    target: Target
    checkpoint: Any
    seq: int


@dataclass
class FeaturesJob:
    """Write the features file of the current input."""

    target: Target


class Executor(Protocol):
    """What the worker runs; implemented by the request handlers."""

    def snapshot(self) -> RenderParams:
        """The current render settings (called with the worker's lock held)."""
        ...

    def run_load(self, job: LoadJob) -> None:
        """Load a checkpoint and report it."""
        ...

    def run_features(self, job: FeaturesJob) -> None:
        """Write a features file and report it."""
        ...

    def run_render(self, job: RenderJob) -> None:
        """Render, write and (through :meth:`Worker.publish`) report one result."""
        ...

    def report_cancelled(self, target: Target) -> None:
        """Tell the client that the render it cancelled has stopped."""
        ...


class Worker:
    """Runs loads first, then feature files, then the wanted render, one at a time."""

    def __init__(self, executor: Executor) -> None:
        self.lock = threading.Condition(threading.RLock())
        self._executor = executor
        self._thread = threading.Thread(target=self._run, name="ddsp-render-worker", daemon=True)
        self._stopping = False
        self.generation = 0
        self._render_target: Target | None = None
        self._current: RenderJob | None = None
        self._load: LoadJob | None = None
        self._load_seq = 0
        self._features: deque[FeaturesJob] = deque()
        self._busy = False
        self._loading = False

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the running job at its next stage and end the thread."""
        with self.lock:
            self._stopping = True
            self._render_target = None
            self._load = None
            self._features.clear()
            self.lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the render worker did not stop within %.0f s", timeout)

    # --- requests (from the receiving thread) -----------------------------------------------
    def request_render(self, target: Target) -> None:
        """Want a render of the current state; a running one is superseded."""
        with self.lock:
            self.generation += 1
            self._render_target = target
            self.lock.notify_all()

    def changed(self, auto_target: Target | None = None) -> None:
        """The render-relevant state changed: supersede the running render and render again.

        A render is wanted afterwards if one was running or wanted already, or if
        ``auto_target`` is given (``/ddsp/auto 1``).
        """
        with self.lock:
            self.generation += 1
            if self._render_target is None:
                current = self._current
                if current is not None and not current.cancelled and not current.published:
                    self._render_target = current.target
                elif auto_target is not None:
                    self._render_target = auto_target
            self.lock.notify_all()

    def cancel(self, target: Target) -> bool:
        """Drop the wanted render and stop the running one.

        Returns True if a running render will stop (the executor then reports it), False if
        nothing was running (the caller replies at once).
        """
        with self.lock:
            self._render_target = None
            current = self._current
            if current is None or current.cancelled or current.published:
                return False
            current.cancelled = True
            current.cancel_target = target
            self.lock.notify_all()
            return True

    def submit_load(self, target: Target, checkpoint: Any) -> LoadJob:
        """Load a checkpoint before anything else; replaces a load that has not started."""
        with self.lock:
            self._load_seq += 1
            self._load = LoadJob(target, checkpoint, self._load_seq)
            self.lock.notify_all()
            return self._load

    def submit_features(self, target: Target) -> None:
        """Write a features file once the loads before it are done."""
        with self.lock:
            self._features.append(FeaturesJob(target))
            self.lock.notify_all()

    # --- questions (any thread) -------------------------------------------------------------
    def is_current(self, job: RenderJob) -> bool:
        """Whether ``job`` still renders the latest state and was neither cancelled nor stopped."""
        with self.lock:
            return not (self._stopping or job.cancelled or job.generation != self.generation)

    def is_latest_load(self, job: LoadJob) -> bool:
        """Whether no newer checkpoint was asked for since ``job``."""
        with self.lock:
            return job.seq == self._load_seq and not self._stopping

    @property
    def load_pending(self) -> bool:
        """A checkpoint load is queued or running."""
        with self.lock:
            return self._load is not None or self._loading

    def publish(self, job: RenderJob, send: Any) -> bool:
        """Call ``send()`` (queue the final replies) only if ``job`` is still current.

        Holding the lock makes the check and the replies one step: a cancel or a change that
        arrives later finds the render already published and leaves it alone.
        """
        with self.lock:
            if not self.is_current(job):
                return False
            job.published = True
            send()
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is running or wanted (for tests and shutdown); True if idle."""
        with self.lock:
            return self.lock.wait_for(self._idle, timeout)

    # --- the thread -------------------------------------------------------------------------
    def _idle(self) -> bool:
        return (
            not self._busy
            and self._load is None
            and not self._features
            and self._render_target is None
        )

    def _take(self) -> tuple[str, Any] | None:
        while not self._stopping and self._idle():
            self.lock.wait()
        if self._stopping:
            return None
        self._busy = True
        if self._load is not None:
            job, self._load = self._load, None
            self._loading = True
            return "load", job
        if self._features:
            return "features", self._features.popleft()
        target, self._render_target = self._render_target, None
        assert target is not None
        job = RenderJob(target, self._executor.snapshot(), self.generation)
        self._current = job
        return "render", job

    def _run(self) -> None:
        while True:
            with self.lock:
                taken = self._take()
            if taken is None:
                return
            kind, job = taken
            try:
                if kind == "load":
                    self._executor.run_load(job)
                elif kind == "features":
                    self._executor.run_features(job)
                else:
                    self._executor.run_render(job)
            except Exception:
                # The executor reports its own errors; this only keeps the thread alive.
                log.exception("unexpected failure in the render worker (%s)", kind)
            finally:
                with self.lock:
                    self._busy = False
                    self._loading = False
                    if kind == "render":
                        self._current = None
                        if job.cancelled and not job.published and job.cancel_target:
                            self._executor.report_cancelled(job.cancel_target)
                    self.lock.notify_all()
