"""``ddsp-pd patch``: where the Pd patches are and how to open them (or a copy to edit)."""

from __future__ import annotations

from pathlib import Path

import click

from ddsp_pd.errors import DdspPdError
from ddsp_pd.pd_patches import MAIN_PATCH, copy_patches, patches_dir

HOW_TO = """\
To use it:
  1. start the server:  ddsp-pd serve --checkpoint DIR   (OSC on 127.0.0.1:9000)
  2. open the patch:    pd "{main}"
The patch connects by itself (replies come back on port 9001; both ports can be
changed in its 'server' panel). Choose an input file, then click 'render'.
Help for each building block: right-click it in Pd and choose Help.
Remote control from other patches or scripts: docs/pd.md ('ddsp-pd' receiver)."""


@click.command(name="patch")
@click.option(
    "--copy",
    "copy_to",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    metavar="DIR",
    help="Copy the patches (with their abstractions/ folder) into DIR, e.g. to edit them.",
)
@click.option("--force", is_flag=True, help="With --copy: replace files that are already there.")
@click.option("--path", "path_only", is_flag=True, help="Print only the folder (for scripts).")
def command(copy_to: Path | None, force: bool, path_only: bool) -> None:
    """Print where the Pd patches are and how to open them with the server running."""
    try:
        folder = patches_dir()
        if copy_to is not None:
            written = copy_patches(copy_to, overwrite=force)
            folder = copy_to.expanduser().resolve()
            if not path_only:
                click.echo(f"Copied {len(written)} patch files into {folder}")
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from exc
    if path_only:
        click.echo(str(folder))
        return
    click.echo(f"Pd patches: {folder}")
    click.echo(f"  {MAIN_PATCH}   the timbre transfer patch")
    click.echo("  abstractions/        ddsp.osc, ddsp.control, ddsp.switch, ddsp.player,")
    click.echo("                       ddsp.curves (each with a -help.pd)")
    click.echo(HOW_TO.format(main=folder / MAIN_PATCH))
