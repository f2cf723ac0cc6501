"""``ddsp-pd serve``: the OSC service the Pd patch talks to (namespace: docs/osc.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ddsp_pd.commands.options import precision_option
from ddsp_pd.errors import DdspPdError

LOG_LEVELS = ("debug", "info", "warning", "error")


def _networks(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    from ddsp_pd.server.access import parse_network

    try:
        return [str(parse_network(value)) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command(name="serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any address but loopback (e.g. 0.0.0.0, every interface) "
    "needs --allow.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="CIDR",
    callback=_networks,
    help="Network whose senders are served, e.g. 192.168.1.0/24 or 127.0.0.1 (repeatable); "
    "datagrams from elsewhere are dropped unanswered. Required off loopback "
    "[default on loopback: every local sender].",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that paths sent to /ddsp/input and /ddsp/checkpoint must resolve into "
    "(repeatable; the checkpoint folders and the output folder always count) "
    "[default: on loopback any path; off loopback your home folder].",
)
@click.option(
    "-p",
    "--port",
    default=9000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="UDP port to listen on (0: any free port, printed at start).",
)
@click.option(
    "-c",
    "--checkpoint",
    default=None,
    metavar="DIR|ZIP|NAME",
    help="Checkpoint to load at start [default: the shipped default model].",
)
@click.option(
    "--checkpoint-dir",
    "checkpoint_dirs",
    multiple=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of checkpoints for /ddsp/checkpoints and names (repeatable) "
    "[default: the shipped and the user's checkpoint folders].",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for results [default: <user cache>/ddsp-pd/renders].",
)
@click.option(
    "--keep",
    default=20,
    show_default=True,
    type=click.IntRange(1, None),
    help="Results of each kind kept in the output folder; older ones are deleted.",
)
@click.option("--tracker", default=None, help="f0 tracker [default: the engine's default].")
@precision_option
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging on stderr.",
)
def command(
    host: str,
    allow: list[str],
    roots: tuple[Path, ...],
    port: int,
    checkpoint: str | None,
    checkpoint_dirs: tuple[Path, ...],
    output_dir: Path | None,
    keep: int,
    tracker: str | None,
    precision: str,
    log_level: str,
) -> None:
    """Run the OSC service that the Pd patch talks to, until Ctrl-C or SIGTERM.

    It listens on 127.0.0.1 unless --host says otherwise; off loopback it serves only the
    --allow networks and opens only files under the --root folders (docs/osc.md, "Access").
    """
    from ddsp_pd.server.app import OscService, ServerConfig, configure_logging, serve_until_signal

    # Undone when the command ends, so nothing waits at exit on a stderr nobody reads.
    click.get_current_context().call_on_close(configure_logging(log_level))
    log = logging.getLogger("ddsp_pd.serve")
    dirs = [d.expanduser() for d in checkpoint_dirs] or None
    try:
        from ddsp_pd.server.access import check_listen, parse_networks

        # Before the engine: a refused address should not wait for TensorFlow.
        check_listen(host, parse_networks(allow))
        engine = _make_engine(tracker, dirs, precision)
        config = ServerConfig(
            host=host,
            port=port,
            output_dir=output_dir,
            keep=keep,
            checkpoint_dirs=dirs,
            allow=list(allow) or None,
            roots=[r.expanduser() for r in roots] or None,
        )
        service = OscService(engine, config)
    except DdspPdError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        info = service.preload(checkpoint)
        click.echo(
            f"ddsp-pd serve: checkpoint {info.name} ({info.era}, {info.sample_rate} Hz) "
            f"from {info.path}"
        )
    except DdspPdError as exc:
        if checkpoint is not None:
            service.stop()
            raise click.ClickException(exc.message) from exc
        click.echo(
            f"ddsp-pd serve: no checkpoint loaded ({exc.message}); /ddsp/render answers "
            "with an error until /ddsp/checkpoint chooses one"
        )
    host_, port_ = service.address
    if service.off_loopback:
        roots_text = service.roots.describe() if service.roots else "any folder"
        click.echo(
            f"ddsp-pd serve: warning: listening off loopback on {host_}: serving senders in "
            f"{service.senders.describe()} only; /ddsp/input and /ddsp/checkpoint limited to "
            f"{roots_text}",
            err=True,
        )
    click.echo(
        f"ddsp-pd serve: listening on udp {host_}:{port_}; results in {service.outputs.folder}"
    )
    log.debug("checkpoint folders: %s", dirs or "default")
    serve_until_signal(service)


def _make_engine(tracker: str | None, dirs: list[Path] | None, precision: str = "exact") -> object:
    try:
        from ddsp_pd.transfer import Engine
    except ImportError as exc:
        raise click.ClickException(f"the render engine is not available: {exc}") from exc
    if tracker is not None:
        from ddsp_pd.pitch import TRACKERS

        if tracker not in TRACKERS:
            raise click.ClickException(
                f"unknown --tracker {tracker!r}: use one of {', '.join(TRACKERS)}"
            )
        return Engine(tracker=tracker, checkpoint_dirs=dirs, warm_up=True, precision=precision)
    return Engine(checkpoint_dirs=dirs, warm_up=True, precision=precision)
