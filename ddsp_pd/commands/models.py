"""``ddsp-pd models``: the per-user model library (list, download, import, remove, path).

Every model in the library is usable by name wherever a checkpoint is asked for
(``render -c NAME``, ``info NAME``, ``serve -c NAME``, the server's ``/ddsp/checkpoints``).
See docs/models.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ddsp_pd.errors import DdspPdError

_SOURCE_HELP = (
    "Origin to download from instead of https://storage.googleapis.com (a mirror of the same "
    "paths) [default: $DDSP_PD_MODEL_SOURCE, else Google's]."
)


def _mb(size: int | None) -> str:
    if size is None:
        return "?"
    return f"{size / 1e3:.0f} kB" if size < 100_000 else f"{size / 1e6:.1f} MB"


def _fail(exc: Exception) -> click.ClickException:
    if isinstance(exc, OSError):
        return click.ClickException(f"{exc.filename or 'the model library'}: {exc.strerror or exc}")
    return click.ClickException(str(exc))


class _Progress:
    """A :class:`ddsp_pd.library.install.Reporter` for the terminal: a bar per model on a
    TTY, one line per model elsewhere, nothing with --quiet (errors are always shown)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._shown = 0

    def begin(self, name: str, total: int | None) -> None:
        if self.quiet:
            return
        label = f"{name} ({_mb(total)})" if total else name
        if self.tty and total:
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr, width=30)
            self._bar.__enter__()
            self._shown = 0
        else:
            click.echo(f"downloading {label} ...", err=True)

    def update(self, done: int) -> None:
        # Redrawn every 0.5% or so: a line per 16 kB chunk would flood a slow terminal.
        bar = self._bar
        if bar is not None and (done - self._shown >= bar.length // 200 or done >= bar.length):
            bar.update(done - self._shown)
            self._shown = done

    def end(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def note(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


def _report(results: list, quiet: bool) -> None:
    """One line per model; warnings and failures on stderr; a failure exits non-zero."""
    failed = []
    for result in results:
        for warning in result.warnings:
            click.echo(f"warning: {result.name}: {warning}", err=True)
        if result.action == "failed":
            failed.append(result)
            if len(results) > 1:
                click.echo(f"error: {result.name}: {result.error}", err=True)
        elif result.action == "present":
            if not quiet:
                click.echo(f"{result.name}: already installed ({result.path})")
        else:
            size = _mb(result.entry.size) if result.entry else "?"
            click.echo(f"{result.action} {result.name} ({size}): {result.path}")
    if len(failed) == 1 and len(results) == 1:
        raise click.ClickException(str(failed[0].error))
    if failed:
        names = ", ".join(r.name for r in failed)
        raise click.ClickException(
            f"{len(failed)} of {len(results)} models could not be installed: {names}"
        )


@click.group(name="models")
def command() -> None:
    """The model library: the published pretrained models, and your own, by name.

    Models in the library work by name everywhere: ddsp-pd render -c NAME, info NAME,
    serve -c NAME, and the Pd patch's checkpoint list.
    """


@command.command(name="path")
@click.argument("name", required=False)
def path_command(name: str | None) -> None:
    """Print the library folder (with NAME: where that model is)."""
    from ddsp_pd.library.store import Library

    library = Library()
    if name is None:
        click.echo(str(library.root))
        return
    for model in library.installed():
        if model.name == name:
            click.echo(str(model.path))
            return
    raise click.ClickException(f"no model named '{name}' is installed (see ddsp-pd models list)")


@command.command(name="list")
@click.option("--offline", is_flag=True, help="Do not ask the source for the published sizes.")
@click.option("--source", default=None, metavar="URL", help=_SOURCE_HELP)
def list_command(offline: bool, source: str | None) -> None:
    """List the installed models and the published ones that can be downloaded."""
    from ddsp_pd.library.install import is_published_install
    from ddsp_pd.library.published import KIND_TITLES, PUBLISHED, resolve_origin
    from ddsp_pd.library.store import Library

    try:
        library = Library()
        installed = library.installed()
        origin = resolve_origin(source)
    except (DdspPdError, OSError) as exc:
        raise _fail(exc) from exc
    if library.manifest_problem:
        click.echo(f"warning: {library.manifest_problem}", err=True)
    click.echo(f"Installed (library: {library.root}):")
    if not installed:
        click.echo("  (none)")
    for model in installed:
        kind = KIND_TITLES.get(model.kind or "", "unknown")
        if model.shipped:
            where = "shipped with ddsp-pd"
        elif model.entry is not None:
            where = f"{model.entry.date[:10]} from {model.entry.source}"
        else:
            where = "put there by hand (not in the manifest)"
        click.echo(f"  {model.name:<18} {kind:<17} {_mb(model.size):>9}  {where}")
    sizes = {} if offline else _published_sizes(origin)
    click.echo("Published (ddsp-pd models download NAME ... | all | vst):")
    names = {m.name: m for m in installed if not m.shipped}
    for name, model in PUBLISHED.items():
        here = names.get(name)
        status = "installed" if here and is_published_install(here.entry, model) else ""
        size = sizes.get(name)
        shown = _mb(size) if size is not None else ("?" if not offline else "")
        if model.member is not None and size is not None:
            shown = f"{shown} zip"
        click.echo(
            f"  {name:<18} {KIND_TITLES[model.kind]:<17} {shown:>9}  "
            f"{status + ': ' if status else ''}{model.description}"
        )
    if not offline and not sizes:
        click.echo(f"(sizes unknown: {origin} did not answer; try again online)", err=True)


def _published_sizes(origin: str) -> dict[str, int | None]:
    """Download sizes by name, asking the source once per folder and once for the zip; stops
    at the first network failure (list must not hang offline)."""
    from ddsp_pd.library.download import DownloadError, Fetcher, HttpOptions
    from ddsp_pd.library.install import published_size
    from ddsp_pd.library.published import PUBLISHED

    sizes: dict[str, int | None] = {}
    zip_size: dict[str, int | None] = {}
    with Fetcher(HttpOptions(timeout=5.0, retries=0)) as fetcher:
        for name, model in PUBLISHED.items():
            try:
                if model.member is not None:
                    if model.path not in zip_size:
                        zip_size[model.path] = published_size(fetcher, origin, model)
                    sizes[name] = zip_size[model.path]
                else:
                    sizes[name] = published_size(fetcher, origin, model)
            except DownloadError as exc:
                if exc.unreachable:
                    return {}
                sizes[name] = None
            except DdspPdError:
                sizes[name] = None
    return sizes


@command.command(name="download")
@click.argument("names", nargs=-1, required=True, metavar="NAME... | all | vst")
@click.option("--source", default=None, metavar="URL", help=_SOURCE_HELP)
@click.option("--force", is_flag=True, help="Download again and replace what is installed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result lines.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a connection or for the next bytes.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=4,
    show_default=True,
    help="Attempts after a failed one (each resumes where the last stopped).",
)
def download_command(
    names: tuple[str, ...], source: str | None, force: bool, quiet: bool, timeout: float,
    retries: int,
) -> None:  # fmt: skip
    """Download published models into the library (see 'ddsp-pd models list').

    A cut or interrupted download resumes where it stopped the next time; a model is
    installed only once all of it has arrived and been checked.
    """
    from ddsp_pd.library.download import Fetcher, HttpOptions
    from ddsp_pd.library.install import install_published
    from ddsp_pd.library.published import expand_names, resolve_origin
    from ddsp_pd.library.store import Library

    try:
        models = expand_names(names)
        origin = resolve_origin(source)
        with Fetcher(HttpOptions(timeout=timeout, retries=retries)) as fetcher:
            results = install_published(
                models, Library(), fetcher, origin, force=force, reporter=_Progress(quiet)
            )
    except KeyboardInterrupt:
        click.echo(
            "\ninterrupted: nothing half-downloaded was installed; run the same command to resume",
            err=True,
        )
        sys.exit(130)
    except (DdspPdError, OSError) as exc:
        raise _fail(exc) from exc
    _report(results, quiet)


@command.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Name in the library [default: the folder's or file's].")
@click.option("--force", is_flag=True, help="Replace a library model of the same name.")
def import_command(path: Path, name: str | None, force: bool) -> None:
    """Copy a model into the library: a checkpoint folder, a .zip of one, or a DDSP-VST .tflite
    (or a folder or zip of them, such as DDSP-VST-Models.zip)."""
    from ddsp_pd.library.importer import import_model
    from ddsp_pd.library.store import Library

    try:
        results = import_model(Library(), path, name=name, force=force)
    except (DdspPdError, OSError) as exc:
        raise _fail(exc) from exc
    _report(results, quiet=False)


@command.command(name="remove")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before removing a model that "
              "ddsp-pd did not install (it may be your only copy).")  # fmt: skip
def remove_command(names: tuple[str, ...], yes: bool) -> None:
    """Remove models from the library (and any partial download of them)."""
    import shutil

    from ddsp_pd.library.install import partial_dir
    from ddsp_pd.library.published import PUBLISHED
    from ddsp_pd.library.store import Library

    library = Library()
    try:
        for name in names:
            model = library.find(name)
            partial = partial_dir(library, PUBLISHED[name]) if name in PUBLISHED else None
            if partial is not None and PUBLISHED[name].member is not None:
                partial = None  # the zip's folder is shared by every DDSP-VST model
            has_partial = partial is not None and partial.exists()
            if model is None and not has_partial:
                shipped = any(m.name == name and m.shipped for m in library.installed())
                why = "it is shipped with ddsp-pd" if shipped else "no such model in the library"
                raise click.ClickException(f"cannot remove '{name}': {why} ({library.root})")
            if model is not None and model.entry is None and not yes:
                if not sys.stdin.isatty():
                    raise click.ClickException(
                        f"'{name}' was not installed by ddsp-pd (it may be your only copy, "
                        f"{model.path}); give --yes to remove it"
                    )
                click.confirm(f"'{name}' was not installed by ddsp-pd; delete {model.path}?",
                              abort=True)  # fmt: skip
            with library.locked():
                removed = library.remove(name) if model is not None else False
                if has_partial:
                    shutil.rmtree(partial, ignore_errors=True)
            click.echo(f"removed {name}" + ("" if removed else " (a partial download)"))
    except (DdspPdError, OSError) as exc:
        raise _fail(exc) from exc
