"""What each request does: state changes and their replies, and the worker's jobs.

Request handlers run on the receiving thread and return quickly; anything slow (loading a
checkpoint, extracting features, rendering) becomes a job of the :class:`Worker`. State is
read and written only while holding the worker's lock, so a render's snapshot and the
change that supersedes it are ordered.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import soundfile as sf

from ddsp_pd import __version__
from ddsp_pd.catalog import find_checkpoints, resolve_checkpoint
from ddsp_pd.errors import CancelledError, CheckpointError, DdspPdError, InputError
from ddsp_pd.server.access import PathRoots
from ddsp_pd.server.clients import ClientTable, ErrorLimiter
from ddsp_pd.server.engine import (
    RenderEngine,
    SettingsFactory,
    adjusted_args,
    feature_channels,
    model_info,
    render_long_input,
    render_with_progress,
    transfer_settings,
)
from ddsp_pd.server.input_copy import InputCopies, pd_readable
from ddsp_pd.server.outputs import OutputFolder
from ddsp_pd.server.replies import ReplySender, Target
from ddsp_pd.server.state import (
    MAX_STRING_BYTES,
    SETTINGS,
    OscError,
    RenderParams,
    ServerState,
    utf8_len,
)
from ddsp_pd.server.worker import FeaturesJob, LoadJob, RenderJob, Worker

if TYPE_CHECKING:
    from ddsp_pd.server.streams import StreamService

log = logging.getLogger(__name__)

#: Silence after each ``/ddsp/checkpoint_entry`` so a long list never floods Pd's buffer.
LIST_PAUSE_S = 0.002
#: What a render or a features file needs first; the words a patch can show as they are.
NO_INPUT = "no input file chosen yet"
NO_CHECKPOINT = "no checkpoint loaded yet"
#: Frames per second assumed for a clip's length when no model info is at hand (ddsp's 250).
FRAME_RATE_GUESS = 250.0


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def unusable_input(raw: str) -> InputError:
    """The one answer for an input path that is missing or outside the roots."""
    return InputError(f"cannot use input file: {_short(raw)} (not found or not allowed)")


def unusable_checkpoint(raw: str) -> CheckpointError:
    """The one answer for a checkpoint that is neither a known name nor a usable path."""
    return CheckpointError(
        f"cannot use checkpoint: {_short(raw)} (no such name; as a path not found or not allowed)"
    )


def check_input_file(raw: str, roots: PathRoots | None = None) -> Path:
    """Resolve an input path and check cheaply (the header only) that it is audio.

    With ``roots``, the path must resolve into one of them, and one that does not gets the
    same answer as a missing one, so the server tells nothing about files outside the roots.
    The result is then the resolved path (what was checked is what is read).

    Raises:
        InputError: the path is empty, too long, missing, not allowed, not a file, or not audio.
    """
    if not raw.strip():
        raise InputError("input path is empty")
    if utf8_len(raw) > MAX_STRING_BYTES:
        raise InputError(f"input path is too long ({utf8_len(raw)} bytes): {_short(raw, 60)}")
    try:
        path = Path(raw).expanduser()
        located = roots.resolve(path) if roots is not None else path.absolute()
        if located is None or not located.exists():
            raise unusable_input(raw)
    except (OSError, ValueError, RuntimeError) as exc:
        # e.g. '~nobody', a NUL byte, a symlink loop: as good as missing
        raise unusable_input(raw) from exc
    path = located
    try:
        if not path.is_file():
            raise InputError(f"{_short(raw)} is not a file")
        info = sf.info(str(path))
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise InputError(f"{_short(raw)} is not a readable audio file ({reason})") from exc
    if info.frames <= 0:
        raise InputError(f"{_short(raw)} is empty (0 samples)")
    return path


class Handlers:
    """The server's behaviour behind every address, and the executor of the worker's jobs."""

    def __init__(
        self,
        engine: RenderEngine,
        replies: ReplySender,
        outputs: OutputFolder,
        checkpoint_dirs: list[Path] | None = None,
        settings_factory: SettingsFactory = transfer_settings,
        *,
        clients: ClientTable | None = None,
        errors: ErrorLimiter | None = None,
        roots: PathRoots | None = None,
    ) -> None:
        self.engine = engine
        self.replies = replies
        self.outputs = outputs
        self.checkpoint_dirs = checkpoint_dirs
        self.settings_factory = settings_factory
        self.state = ServerState()
        self.worker = Worker(self)
        #: The clients that said hello (they hear every state change and render result).
        self.clients = clients if clients is not None else ClientTable()
        #: Limits the errors each sender gets.
        self.errors = errors if errors is not None else ErrorLimiter()
        #: Folders that client-given paths must resolve into (None: any path).
        self.roots = roots
        self.own_address: Target | None = None
        #: Addresses that reach this machine (the server's own replies come from one of them).
        self.local_hosts: set[str] = {"127.0.0.1", "::1", "localhost"}
        #: WAV copies of inputs Pd cannot read (FLAC, MP3, ...), made once per input.
        self.input_copies = InputCopies()
        #: The live streams (set by the service; None: no stream namespace).
        self.streams: StreamService | None = None

    # --- where replies go ---------------------------------------------------------------------
    def target_for(self, sender: Target) -> Target:
        """Where replies to ``sender`` go: its client's hello port, else the sender itself."""
        return self.clients.target_for(sender)

    def touch(self, sender: Target) -> None:
        """A datagram came from ``sender``: it keeps its client registered."""
        self.clients.seen(sender)

    def send(self, target: Target, address: str, *args: Any, pause: float = 0.0) -> None:
        """Queue one reply."""
        self.replies.send(target, address, *args, pause=pause)

    def send_all(self, requester: Target | None, address: str, *args: Any) -> None:
        """Queue a state change or a render result for every client and for ``requester``."""
        for target in self.clients.recipients(requester):
            self.replies.send(target, address, *args)

    def error(self, target: Target, exc: BaseException, *, everyone: bool = False) -> None:
        """Reply ``/ddsp/error code message``; unexpected exceptions are ``internal``.

        A request's error goes to its sender (``target``) only, within that sender's rate
        limit; the failure of a render or a load (``everyone``) goes where its progress went.
        """
        if isinstance(exc, DdspPdError):
            code, message = exc.code, exc.message
            log.info("error %s: %s", code, message, extra={"rate_key": code})
        else:
            code, message = "internal", f"{type(exc).__name__}: {exc}"
            log.error("internal error: %s", message, exc_info=exc)
        text = " ".join(str(message).split())
        if everyone:
            self.send_all(target, "/ddsp/error", code, text)
        elif self.errors.allow(target, registered=self.clients.is_client(target)):
            self.send(target, "/ddsp/error", code, text)

    # --- preload (before serving) -------------------------------------------------------------
    def preload(self, checkpoint: str | os.PathLike[str] | None) -> Any:
        """Load a checkpoint synchronously and make it the current one."""
        path = self._resolve(checkpoint)
        loaded = self.engine.load_model(path)
        info = model_info(loaded, path)
        with self.worker.lock:
            self.state.model = info
        return info

    def _resolve(self, checkpoint: str | os.PathLike[str] | None) -> Path:
        if checkpoint is not None and utf8_len(str(checkpoint)) > MAX_STRING_BYTES:
            raise CheckpointError(f"checkpoint name is too long: {_short(str(checkpoint), 60)}")
        try:
            return resolve_checkpoint(checkpoint, self.checkpoint_dirs)
        except (OSError, ValueError, RuntimeError) as exc:
            # e.g. a name too long for the file system, a NUL byte, '~nobody'
            raise CheckpointError(f"bad checkpoint path {_short(str(checkpoint))}: {exc}") from exc

    def _choose(self, raw: str) -> Path:
        """The checkpoint a client named: a path (into the roots, if any), else a name from the
        checkpoint folders. A missing and a refused path answer alike."""
        if utf8_len(raw) > MAX_STRING_BYTES:
            raise CheckpointError(f"checkpoint name is too long: {_short(raw, 60)}")
        if raw == "":
            return self._resolve(None)  # the default model of the checkpoint folders
        try:
            located: Path | None = Path(raw).expanduser().resolve()
            if not located.exists():
                located = None
        except (OSError, ValueError, RuntimeError):
            located = None  # '~nobody', a NUL byte, a symlink loop: as good as missing
        if located is not None and (self.roots is None or self.roots.contains(located)):
            return located
        try:
            entries = find_checkpoints(self.checkpoint_dirs)
        except OSError as exc:
            raise unusable_checkpoint(raw) from exc
        for entry in entries:
            # What /ddsp/checkpoints lists is usable by its path too, wherever that leads.
            if entry.name == raw or (located is not None and entry.path == located):
                return entry.path
        raise unusable_checkpoint(raw)

    # --- request handlers (receiving thread) ----------------------------------------------------
    def is_own(self, address: Target) -> bool:
        """Whether ``address`` is the server's own socket (a reply sent there would come back)."""
        if self.own_address is None or address[1] != self.own_address[1]:
            return False
        host = address[0]
        return host == self.own_address[0] or host in self.local_hosts

    def hello(self, sender: Target, port: int) -> None:
        """Register the client (sender's host, ``port``): replies to the sender go there."""
        if self.is_own((sender[0], port)):
            raise OscError(f"/ddsp/hello: port {port} is the server's own port")
        target = self.clients.hello(sender, port)
        with self.worker.lock:
            model = self.state.model
        if model is not None:
            # Before ready, so a client knows the model's era and rate from the start.
            self.send(target, "/ddsp/loaded", model.name, model.era, model.sample_rate)
        self.send(target, "/ddsp/ready", __version__, model.name if model else "")

    def ping(self, sender: Target) -> None:
        """Answer ``/ddsp/pong``."""
        self.send(self.target_for(sender), "/ddsp/pong")

    def status(self, sender: Target) -> None:
        """Report every setting, then ``/ddsp/state end 1``."""
        target = self.target_for(sender)
        with self.worker.lock:
            items = self.state.status_items()
        for key, value in items:
            self.send(target, "/ddsp/state", key, value)
        self.send(target, "/ddsp/state", "end", 1)

    def set_control(self, sender: Target, key: str, value: float | int) -> None:
        """Store an already validated control value, reply its state, supersede if it matters."""
        target = self.target_for(sender)
        with self.worker.lock:
            changed = self.state.set(key, value)
            if changed:
                self.send_all(target, "/ddsp/state", key, self.state.osc_value(key))
            else:
                self.send(target, "/ddsp/state", key, self.state.osc_value(key))
            if changed and SETTINGS[key].renders:
                self.worker.changed(target if self._auto_ready() else None)
            if changed and self.streams is not None:
                self.streams.set_control(key, value)

    def set_input(self, sender: Target, raw: str) -> None:
        """Choose the input file (checked now); always a change, as it may have been re-recorded."""
        path = check_input_file(raw, self.roots)
        target = self.target_for(sender)
        shown = pd_readable(path)
        with self.worker.lock:
            self.state.input_path = path
            self.send_all(target, "/ddsp/state", "input", str(path))
            if shown is not None:
                # Pd reads this file itself; other formats get a copy with the features.
                self.send_all(target, "/ddsp/input_wav", str(path), shown.frames, shown.sample_rate)
            self.worker.changed(target if self._auto_ready() else None)

    def choose_checkpoint(self, sender: Target, raw: str) -> None:
        """Resolve a checkpoint now, load it in the background."""
        target = self.target_for(sender)
        path = self._choose(raw)
        with self.worker.lock:
            if self.state.model is not None and self.state.model.path == path:
                self.worker.submit_load(target, path)  # cancels an older pending load
                return
            # The running render is about to be stale: stop it so the load starts sooner.
            self.worker.changed(None)
            self.worker.submit_load(target, path)

    def list_checkpoints(self, sender: Target) -> None:
        """Send the checkpoints of the checkpoint folders, one message each, paced."""
        target = self.target_for(sender)
        try:
            entries = find_checkpoints(self.checkpoint_dirs)
        except OSError as exc:
            raise CheckpointError(f"cannot list the checkpoint folders: {exc}") from exc
        self.send(target, "/ddsp/checkpoints_begin", len(entries))
        for index, entry in enumerate(entries):
            self.send(
                target,
                "/ddsp/checkpoint_entry",
                index,
                entry.name,
                str(entry.path),
                pause=LIST_PAUSE_S,
            )
        self.send(target, "/ddsp/checkpoints_end", len(entries))

    def render(self, sender: Target) -> None:
        """Want a render of the current state (superseding a running one)."""
        target = self.target_for(sender)
        with self.worker.lock:
            self._check_renderable()
            self.worker.request_render(target)

    def cancel(self, sender: Target) -> None:
        """Stop the running render; ``/ddsp/cancelled`` once it has stopped."""
        target = self.target_for(sender)
        if not self.worker.cancel(target):
            self.send(target, "/ddsp/cancelled")

    def features(self, sender: Target) -> None:
        """Queue a features file of the current input."""
        target = self.target_for(sender)
        with self.worker.lock:
            self._check_renderable()
            self.worker.submit_features(target)

    def _check_renderable(self) -> None:
        if self.state.input_path is None:
            raise InputError(NO_INPUT)
        if self.state.model is None and not self.worker.load_pending:
            raise CheckpointError(NO_CHECKPOINT)

    def _auto_ready(self) -> bool:
        return (
            self.state.auto
            and self.state.input_path is not None
            and (self.state.model is not None or self.worker.load_pending)
        )

    # --- worker jobs (worker thread) -------------------------------------------------------------
    def snapshot(self) -> RenderParams:
        """The render settings as they are now (the worker holds the lock)."""
        return self.state.params()

    def report_cancelled(self, target: Target) -> None:
        """A cancelled render has stopped (everyone heard its progress)."""
        self.send_all(target, "/ddsp/cancelled")

    def run_load(self, job: LoadJob) -> None:
        """Load a checkpoint; apply and report it unless a newer one was asked for."""
        self.send_all(job.target, "/ddsp/progress", "load", 0.0)
        try:
            loaded = self.engine.load_model(job.checkpoint)
            info = model_info(loaded, Path(job.checkpoint))
        except Exception as exc:
            with self.worker.lock:
                if self.worker.is_latest_load(job):
                    self.error(job.target, exc, everyone=True)
                elif not isinstance(exc, DdspPdError):
                    log.error("superseded checkpoint load failed", exc_info=exc)
            return
        with self.worker.lock:
            if not self.worker.is_latest_load(job):
                log.info("checkpoint %s loaded but a newer one was chosen", info.name)
                return
            same = self.state.model is not None and self.state.model.path == info.path
            self.state.model = info
            self.send_all(job.target, "/ddsp/progress", "load", 1.0)
            self.send_all(job.target, "/ddsp/loaded", info.name, info.era, info.sample_rate)
            self.send_all(job.target, "/ddsp/state", "checkpoint", info.name)
            if not same:
                self.worker.changed(job.target if self._auto_ready() else None)
                if self.streams is not None:
                    self.streams.model_changed()
        log.info("checkpoint %s loaded (%s, %d Hz)", info.name, info.era, info.sample_rate)

    def _model_for(self, params: RenderParams) -> Any:
        if params.input_path is None:
            raise InputError(NO_INPUT)
        if params.checkpoint_path is None:
            raise CheckpointError(NO_CHECKPOINT)
        return self.engine.load_model(params.checkpoint_path)

    def run_features(self, job: FeaturesJob) -> None:
        """Write the six feature curves of the current input as a float WAV at the frame rate."""
        try:
            with self.worker.lock:
                params = self.state.params()
                info = self.state.model
            if params.input_path is not None:
                # The input itself, or a WAV copy of a format Pd cannot read (made once).
                copy = self.input_copies.shown(params.input_path, self.outputs.write)
                shown = (str(copy.path), copy.frames, copy.sample_rate)
                self.send(job.target, "/ddsp/input_wav", *shown)
            loaded = self._model_for(params)
            assert info is not None
            features, _rate = self.engine.features_for(params.input_path, loaded)
            adjusted = self.engine.adjust(features, loaded, self.settings_factory(params))
            curves = feature_channels(features, adjusted)
            path = self.outputs.write("features", curves, round(info.frame_rate))
        except Exception as exc:
            self.error(job.target, exc)
            return
        self.send(job.target, "/ddsp/features_done", str(path), curves.shape[0], curves.shape[1])

    def run_render(self, job: RenderJob) -> None:
        """Render, write and report one result; a superseded render ends silently."""

        def progress(stage: str, fraction: float) -> None:
            if self.worker.is_current(job):
                self.send_all(job.target, "/ddsp/progress", stage, float(fraction))

        def should_stop() -> bool:
            return not self.worker.is_current(job)

        path: Path | None = None
        try:
            progress("load", 0.0)
            loaded = self._model_for(job.params)
            progress("load", 1.0)
            if should_stop():
                raise CancelledError("render superseded")
            assert job.params.input_path is not None
            with self.worker.lock:
                info = self.state.model
            settings = self.settings_factory(job.params)
            # A long input is rendered and written block by block (flat memory).
            written = render_long_input(
                self.engine,
                loaded,
                settings,
                input_path=job.params.input_path,
                output=self.outputs.new_path("render"),
                progress=progress,
                should_stop=should_stop,
            )
            if written is not None:
                result = written
                path = written.path
                frames = int(written.frames)
                self.outputs.prune("render")
                if should_stop():
                    path.unlink(missing_ok=True)
                    raise CancelledError("render superseded")
                progress("write", 1.0)
            else:
                result = render_with_progress(
                    self.engine,
                    loaded,
                    settings,
                    input_path=job.params.input_path,
                    frame_rate=info.frame_rate if info is not None else FRAME_RATE_GUESS,
                    progress=progress,
                    should_stop=should_stop,
                )
                if should_stop():
                    raise CancelledError("render superseded")
                progress("write", 0.0)
                path = self.outputs.write("render", result.audio, result.sample_rate)
                frames = len(result.audio)
                progress("write", 1.0)
        except CancelledError:
            log.debug("render of generation %d stopped", job.generation)
            return
        except Exception as exc:
            failure = exc
            reported = self.worker.publish(
                job, lambda: self.error(job.target, failure, everyone=True)
            )
            if not reported and not isinstance(exc, DdspPdError):
                log.error("superseded render failed", exc_info=exc)
            return

        def report() -> None:
            self.send_all(job.target, "/ddsp/adjusted", *adjusted_args(result.adjusted))
            self.send_all(
                job.target,
                "/ddsp/done",
                str(path),
                frames,
                int(result.sample_rate),
                float(result.gain_db),
            )

        if self.worker.publish(job, report):
            log.debug("rendered %s (%d frames at %d Hz)", path, frames, result.sample_rate)
        else:
            # Superseded after it was written: nobody will be told about this file.
            path.unlink(missing_ok=True)
