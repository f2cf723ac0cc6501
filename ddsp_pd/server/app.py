"""Start and stop the OSC service: socket, receiving thread, worker, reply sender, signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pythonosc.osc_server import BlockingOSCUDPServer

from ddsp_pd.errors import OutputError
from ddsp_pd.server.access import (
    Network,
    PathRoots,
    SenderFilter,
    check_listen,
    effective_roots,
    is_loopback,
    parse_networks,
)
from ddsp_pd.server.clients import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_ERROR_BURST,
    DEFAULT_ERROR_RATE,
    DEFAULT_MAX_CLIENTS,
    ClientTable,
    ErrorLimiter,
)
from ddsp_pd.server.engine import RenderEngine, SettingsFactory, transfer_settings
from ddsp_pd.server.handlers import Handlers
from ddsp_pd.server.osc import Dispatcher
from ddsp_pd.server.outputs import DEFAULT_KEEP, OutputFolder
from ddsp_pd.server.replies import ReplySender
from ddsp_pd.server.state import ModelInfo
from ddsp_pd.server.streams import DEFAULT_STREAM_EXPIRY, MAX_STREAMS, StreamService

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
#: Kernel receive buffer asked for, so a burst of requests waits instead of being dropped.
RECEIVE_BUFFER = 1 << 20


class _UDPServer(BlockingOSCUDPServer):
    """python-osc's blocking UDP server, but every datagram reaches the dispatcher.

    python-osc drops datagrams that do not look like OSC before its dispatcher sees them;
    the contract says they get ``/ddsp/error osc``.
    """

    allow_reuse_address = False
    # socketserver's default of 8192 would cut long datagrams into undecodable halves.
    max_packet_size = 65535
    #: Set by the service; None admits every sender.
    sender_filter: SenderFilter | None = None

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # A datagram from outside --allow is dropped here, before anything reads it.
        return self.sender_filter is None or self.sender_filter.admits(str(client_address[0]))

    def server_bind(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error while handling a datagram from %s", client_address)


@dataclass
class ServerConfig:
    """How to run the service (access rules: docs/osc.md, "Clients" and "Access")."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    output_dir: Path | None = None
    keep: int = DEFAULT_KEEP
    checkpoint_dirs: list[Path] | None = None
    reply_rate: float = 2000.0
    reply_burst: int = 100
    #: Networks (CIDR strings) whose senders are served; required off loopback.
    allow: list[str | Network] | None = None
    #: Folders client-given paths must resolve into; None: see :func:`effective_roots`.
    roots: list[Path] | None = None
    max_clients: int = DEFAULT_MAX_CLIENTS
    #: Seconds of silence after which a client that said hello is forgotten.
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    #: ``/ddsp/error`` replies per sender: back to back, then per second.
    error_burst: int = DEFAULT_ERROR_BURST
    error_rate: float = DEFAULT_ERROR_RATE
    #: Live streams open at once at most, and seconds without a block that close one.
    max_streams: int = MAX_STREAMS
    stream_expiry: float = DEFAULT_STREAM_EXPIRY


def _local_hosts(bound: str) -> set[str]:
    """This machine's addresses, best effort (needed to spot our own replies when bound to
    every interface)."""
    hosts = {bound}
    if bound in ("0.0.0.0", "::", ""):
        with contextlib.suppress(OSError):
            hosts.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return hosts


def default_output_dir() -> Path:
    """``<user cache>/renders``."""
    from ddsp_pd.catalog import user_cache_dir

    return user_cache_dir() / "renders"


class OscService:
    """The whole service; :meth:`start` runs it on background threads, :meth:`stop` ends it."""

    def __init__(
        self,
        engine: RenderEngine,
        config: ServerConfig | None = None,
        settings_factory: SettingsFactory = transfer_settings,
    ) -> None:
        self.config = config or ServerConfig()
        networks = parse_networks(self.config.allow)
        check_listen(self.config.host, networks)
        folder = self.config.output_dir or default_output_dir()
        self.outputs = OutputFolder(folder, self.config.keep)
        self.outputs.prepare()
        try:
            self._udp = _UDPServer((self.config.host, self.config.port), None)  # type: ignore[arg-type]
        except OSError as exc:
            raise OutputError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from exc
        try:
            # The address really bound decides (a name may resolve otherwise than above).
            check_listen(self.address[0], networks)
        except Exception:
            self._udp.server_close()
            raise
        #: Whether the service listens on more than this machine's loopback interface.
        self.off_loopback = not is_loopback(self.address[0])
        self.senders = SenderFilter(networks)
        self._udp.sender_filter = self.senders
        self.replies = ReplySender(
            self._udp.socket, self.config.reply_rate, self.config.reply_burst
        )
        self.roots: PathRoots | None = effective_roots(
            self.config.roots, self.off_loopback, [*self._checkpoint_dirs(), self.outputs.folder]
        )
        self.handlers = Handlers(
            engine,
            self.replies,
            self.outputs,
            self.config.checkpoint_dirs,
            settings_factory,
            clients=ClientTable(self.config.max_clients, self.config.client_timeout),
            errors=ErrorLimiter(self.config.error_rate, self.config.error_burst),
            roots=self.roots,
        )
        self.handlers.own_address = self.address
        self.handlers.local_hosts |= _local_hosts(self.config.host)
        self.streams = StreamService(
            self.handlers, self.replies, self.config.stream_expiry, self.config.max_streams
        )
        self.handlers.streams = self.streams
        self.dispatcher = Dispatcher(self.handlers)
        self._udp._dispatcher = self.dispatcher  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._udp.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="ddsp-osc-receive",
            daemon=True,
        )
        self._started = False
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the service listens on."""
        host, port = self._udp.server_address[:2]
        return str(host), int(port)

    def _checkpoint_dirs(self) -> list[Path]:
        if self.config.checkpoint_dirs is not None:
            return [Path(d).expanduser() for d in self.config.checkpoint_dirs]
        from ddsp_pd.catalog import default_checkpoint_dirs

        return default_checkpoint_dirs()

    def dropped(self) -> dict[str, int]:
        """What the service dropped so far, by kind (the log reports it now and then)."""
        return {
            "datagrams from outside --allow": self.senders.dropped.total,
            "error replies over the rate limit": self.handlers.errors.dropped.total,
            "replies to a full queue": self.replies.dropped.total,
        }

    @property
    def worker(self) -> Any:
        """The render worker (tests wait on it)."""
        return self.handlers.worker

    def preload(self, checkpoint: str | os.PathLike[str] | None) -> ModelInfo:
        """Load a checkpoint before serving (``--checkpoint``, or the default with None)."""
        return self.handlers.preload(checkpoint)

    def start(self) -> None:
        """Serve on background threads."""
        self.replies.start()
        self.handlers.worker.start()
        self.streams.start()
        self._thread.start()
        self._started = True
        log.info("listening for OSC on udp %s:%d", *self.address)

    def stop(self) -> None:
        """Stop receiving, stop the worker, send what is queued, close the socket."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._udp.shutdown()
            self._thread.join(5.0)
        self.handlers.worker.stop(timeout=5.0)
        self.streams.stop()
        self.replies.stop()
        self._udp.server_close()
        counts = ", ".join(f"{n} {what}" for what, n in self.dropped().items() if n)
        log.info("stopped%s", f" (dropped {counts})" if counts else "")

    def __enter__(self) -> OscService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_signal(service: OscService) -> None:
    """Run ``service`` until Ctrl-C or SIGTERM, then stop it cleanly."""
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        done.set()

    previous = {
        sig: signal.signal(sig, on_signal)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if hasattr(signal, sig.name)
    }
    try:
        service.start()
        while not done.wait(0.5):
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: str) -> Any:
    """Log to stderr with the level and the logger's name, in a way that never blocks.

    A stderr that nobody reads must not stop the server: records go through a bounded queue
    to one writer thread, repeated lines are rate-limited, and raw payloads are never logged
    (:mod:`ddsp_pd.logs`). Returns the installed :class:`ddsp_pd.logs.BackgroundLog`;
    calling it undoes the configuration, flushing for at most a second.
    """
    from ddsp_pd.logs import configure

    return configure(level)
