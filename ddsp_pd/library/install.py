"""Bring published models from the origin into the library: list, fetch, check, install.

A timbre-transfer checkpoint is fetched file by file: its folder is listed through the JSON
API (sizes and MD5s come with it), and of its files only ``operative_config-0.gin``,
``dataset_statistics.pkl`` and the highest ``ckpt-N`` whose data shards are all there are
fetched. Where the origin answers no listing (a plain copy of the tree), the folder's
``checkpoint`` file names ``ckpt-N`` and the index names its data shards.

The DDSP-VST models come in one zip: it is fetched once for every instrument asked for, each
instrument's ``.tflite`` is read out of it (names checked, sizes capped, CRCs checked by
reading), checked, and installed as its own model ``vst_<instrument>``, with the zip's
LICENSE beside it; the zip is then deleted.

Downloads wait in ``<library>/.downloads/<bucket>/<path>``: an interrupted run resumes them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ddsp_pd.checkpoint import GIN_NAME, STATISTICS_NAME, _zip_files
from ddsp_pd.errors import CheckpointError, DdspPdError
from ddsp_pd.library.checks import (
    TFLITE_MAX_BYTES,
    check_checkpoint_folder,
    check_tflite,
    head_check,
    read_zip_member,
)
from ddsp_pd.library.download import DownloadError, Fetcher, library_write_error
from ddsp_pd.library.published import (
    KIND_DDSP,
    KIND_VST,
    MAX_LISTING_PAGES,
    PublishedModel,
    RemoteFile,
    listing_url,
    object_url,
    parse_listing,
)
from ddsp_pd.library.store import Library, ManifestEntry

__all__ = [
    "InstallResult",
    "Reporter",
    "install_published",
    "is_published_install",
    "partial_dir",
    "published_files",
    "published_size",
]

_LISTING_MAX_BYTES = 4 << 20
_STATE_MAX_BYTES = 1 << 20
_LICENSE_MAX_BYTES = 1 << 20
_CKPT_INDEX = re.compile(r"^(ckpt-(\d+))\.index$")
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"([^"]+)"', re.MULTILINE)


class Reporter:
    """What an install tells its user; this one tells nothing (the CLI's draws a bar)."""

    def begin(self, name: str, total: int | None) -> None:
        """Bytes of ``name`` to fetch start arriving (``total`` None when unknown)."""

    def update(self, done: int) -> None:
        """``done`` bytes of the current model have arrived."""

    def end(self) -> None:
        """The current model's bytes are all there."""

    def note(self, message: str) -> None:
        """A line worth showing (a warning, a step)."""


@dataclass
class InstallResult:
    """What happened to one model: ``installed``, ``replaced``, ``present`` or ``failed``."""

    name: str
    action: str
    path: Path | None = None
    entry: ManifestEntry | None = None
    warnings: list[str] = field(default_factory=list)
    error: DdspPdError | None = None


@dataclass
class _Context:
    library: Library
    fetcher: Fetcher
    origin: str
    reporter: Reporter
    force: bool


def is_published_install(entry: ManifestEntry | None, model: PublishedModel) -> bool:
    """Whether a manifest entry is this published model, from any origin (a mirror too)."""
    if entry is None or entry.kind != model.kind:
        return False
    path = urllib.parse.urlsplit(entry.source).path
    return path.endswith("/" + urllib.parse.quote(f"{model.bucket}/{model.path}", safe="/"))


def partial_dir(library: Library, model: PublishedModel) -> Path:
    """Where the downloads of ``model`` wait (a zip's folder is shared by its members)."""
    path = model.path.rstrip("/") if model.is_folder else str(PurePosixPath(model.path).parent)
    return library.downloads / model.bucket / Path(*PurePosixPath(path).parts)


# ------------------------------------------------------------------ what to fetch


def _listing(
    fetcher: Fetcher, origin: str, bucket: str, prefix: str, folder: str
) -> list[RemoteFile] | None:
    """The files the JSON API lists in ``folder``, or None where the origin has no listing."""
    files: list[RemoteFile] = []
    token = None
    for _ in range(MAX_LISTING_PAGES):
        try:
            body = fetcher.get_bytes(listing_url(origin, bucket, prefix, token), _LISTING_MAX_BYTES)
        except DownloadError as exc:
            if exc.status in (401, 403, 405, 501):
                return None  # listing not allowed or not served here
            raise
        if body is None:
            return None
        try:
            page, token = parse_listing(body, origin, bucket, prefix, folder)
        except CheckpointError:
            return None  # a static mirror's page, not the API
        files += page
        if not token:
            break
    return files


def _choose_checkpoint_files(files: list[RemoteFile], where: str) -> list[RemoteFile]:
    """Of a listed checkpoint folder: gin, statistics, and the newest complete ckpt-N."""
    by_name = {f.name: f for f in files}
    if not files:
        raise DownloadError(f"nothing is published under {where}", status=404)
    if GIN_NAME not in by_name:
        raise DownloadError(f"{where} has no {GIN_NAME}: not a ddsp checkpoint folder")
    complete = []
    for name in by_name:
        match = _CKPT_INDEX.match(name)
        if not match:
            continue
        prefix = match.group(1)
        shard = re.compile(rf"^{re.escape(prefix)}\.data-\d{{5}}-of-(\d{{5}})$")
        shards = sorted(n for n in by_name if shard.match(n))
        counts = {shard.match(n).group(1) for n in shards}  # type: ignore[union-attr]
        if shards and len(counts) == 1 and int(counts.pop()) == len(shards):
            complete.append((int(match.group(2)), prefix, shards))
    if not complete:
        raise DownloadError(f"{where} has no complete ckpt-N (index and data shards)")
    _, prefix, shards = max(complete)
    chosen = [by_name[GIN_NAME], by_name[f"{prefix}.index"], *(by_name[s] for s in shards)]
    if STATISTICS_NAME in by_name:
        chosen.insert(1, by_name[STATISTICS_NAME])
    return chosen


def published_files(
    fetcher: Fetcher, origin: str, model: PublishedModel
) -> tuple[list[RemoteFile], bool]:
    """The files to fetch for ``model`` and whether they came from a listing.

    Without a listing the sizes are unknown and, for a checkpoint, the data shards are
    added once the index is there.
    """
    if model.is_folder:
        listed = _listing(fetcher, origin, model.bucket, model.path, model.path)
        if listed is not None:
            return _choose_checkpoint_files(listed, model.url(origin)), True
        return _unlisted_checkpoint_files(fetcher, origin, model), False
    folder = str(PurePosixPath(model.path).parent) + "/"
    listed = _listing(fetcher, origin, model.bucket, model.path, folder)
    name = PurePosixPath(model.path).name
    for remote in listed or []:
        if remote.name == name:
            return [remote], True
    return [RemoteFile(name=name, url=model.url(origin))], False


def _unlisted_checkpoint_files(
    fetcher: Fetcher, origin: str, model: PublishedModel
) -> list[RemoteFile]:
    url = object_url(origin, model.bucket, model.path + "checkpoint")
    state = fetcher.get_bytes(url, _STATE_MAX_BYTES)
    if state is None:
        raise DownloadError(
            f"{model.url(origin)} can be neither listed nor read: no JSON listing at the "
            "source and no 'checkpoint' file naming its ckpt-N",
            status=404,
        )
    match = _STATE_LINE.search(state.decode("utf-8", "replace"))
    prefix = PurePosixPath(match.group(1).replace("\\", "/")).name if match else ""
    if not re.fullmatch(r"ckpt-\d+", prefix):
        raise DownloadError(f"{url} does not name a ckpt-N")

    def remote(name: str) -> RemoteFile:
        return RemoteFile(name=name, url=object_url(origin, model.bucket, model.path + name))

    return [remote(GIN_NAME), remote(STATISTICS_NAME), remote(f"{prefix}.index")]


def published_size(fetcher: Fetcher, origin: str, model: PublishedModel) -> int | None:
    """Bytes ``model`` downloads (for a DDSP-VST model: the whole zip), None if unknown."""
    files, listed = published_files(fetcher, origin, model)
    if listed:
        sizes = [f.size for f in files]
        return None if None in sizes else sum(s for s in sizes if s is not None)
    if not model.is_folder:
        return fetcher.head_size(files[0].url)
    return None


# ------------------------------------------------------------------ fetching


def _fetch(ctx: _Context, remote: RemoteFile, folder: Path, done: Callable[[int], None]) -> Path:
    """Download ``remote`` into ``folder`` (resuming); the complete file's path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise library_write_error(exc, ctx.library.root) from exc
    final = folder / remote.name
    if final.exists():
        # A file whose download completed in an interrupted run: kept only if the listing
        # vouches for it (the checks after staging judge its content).
        if remote.size is not None and final.stat().st_size == remote.size:
            done(remote.size)
            return final
        final.unlink()
    part = folder / f"{remote.name}.part"
    ctx.fetcher.download(remote, part, check_head=head_check(remote.name), progress=done)
    os.replace(part, final)
    return final


def _fetch_all(
    ctx: _Context, name: str, files: list[RemoteFile], folder: Path
) -> list[tuple[RemoteFile, Path]]:
    """Fetch ``files`` of one model with one progress bar."""
    known = [f.size for f in files]
    total = None if None in known else sum(s for s in known if s is not None)
    have = sum(_present(folder, f) for f in files)
    if total is not None:
        # Staging is a rename on the same file system: the download is all the space needed.
        ctx.library.ensure_space(max(0, total - have), name)
    ctx.reporter.begin(name, total)
    fetched = []
    base = 0
    try:
        for remote in files:
            start = base
            path = _fetch(ctx, remote, folder, lambda pos, s=start: ctx.reporter.update(s + pos))
            fetched.append((remote, path))
            base += path.stat().st_size
    finally:
        ctx.reporter.end()
    return fetched


def _present(folder: Path, remote: RemoteFile) -> int:
    for candidate in (folder / remote.name, folder / f"{remote.name}.part"):
        with contextlib.suppress(OSError):
            return candidate.stat().st_size
    return 0


# ------------------------------------------------------------------ installing


def _install_checkpoint(ctx: _Context, model: PublishedModel) -> InstallResult:
    files, listed = published_files(ctx.fetcher, ctx.origin, model)
    folder = partial_dir(ctx.library, model)
    if not listed:
        # The statistics are optional: a plain mirror may not have them.
        gin, stats, index = files
        fetched = _fetch_all(ctx, model.name, [gin, index], folder)
        try:
            fetched += _fetch_all(ctx, model.name, [stats], folder)
        except DownloadError as exc:
            if exc.status != 404:
                raise
        fetched += _fetch_all(ctx, model.name, _shards_of(folder, index, model, ctx.origin), folder)
    else:
        fetched = _fetch_all(ctx, model.name, files, folder)
    staging = ctx.library.new_staging(model.name)
    try:
        for remote, path in fetched:
            os.replace(path, staging / remote.name)
        warnings = check_checkpoint_folder(staging)
    except BaseException:
        # What arrived is in staging now: refused, it goes, and the downloads folder with it.
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _install(ctx, model, staging, model.url(ctx.origin), warnings, folder)


def _shards_of(
    folder: Path, index: RemoteFile, model: PublishedModel, origin: str
) -> list[RemoteFile]:
    from ddsp_pd.tensor_bundle import read_index

    prefix = folder / index.name[: -len(".index")]
    bundle = read_index(prefix)
    names = [bundle.data_path(shard).name for shard in range(bundle.num_shards)]
    return [RemoteFile(name=n, url=object_url(origin, model.bucket, model.path + n)) for n in names]


def _install(
    ctx: _Context,
    model: PublishedModel,
    staging: Path,
    source: str,
    warnings: list[str],
    downloads: Path | None,
) -> InstallResult:
    replacing = ctx.library.existing(model.name) is not None
    entry = ctx.library.install(model.name, staging, model.kind, source, replace=ctx.force)
    if downloads is not None and model.is_folder:
        shutil.rmtree(downloads, ignore_errors=True)
        _prune(downloads.parent, ctx.library.downloads)
    return InstallResult(
        name=model.name,
        action="replaced" if replacing else "installed",
        path=ctx.library.model_path(model.name),
        entry=entry,
        warnings=warnings,
    )


def _install_vst(ctx: _Context, models: list[PublishedModel]) -> list[InstallResult]:
    """Fetch the DDSP-VST zip once and install each of ``models`` out of it."""
    if not models:
        return []
    first = models[0]
    files, _ = published_files(ctx.fetcher, ctx.origin, first)
    folder = partial_dir(ctx.library, first)
    label = "vst" if len(models) > 1 else first.name
    [(_, archive)] = _fetch_all(ctx, label, files, folder)
    results = []
    try:
        size = archive.stat().st_size
        ctx.library.ensure_space(size, "the DDSP-VST models")
        with _open_zip(archive) as (zf, members, licence):
            for model in models:
                try:
                    results.append(_install_member(ctx, model, zf, members, licence, archive))
                except DdspPdError as exc:
                    results.append(InstallResult(model.name, "failed", error=exc))
    finally:
        archive.unlink(missing_ok=True)  # read whole or refused: either way not kept
        _prune(folder, ctx.library.downloads)
    return results


def _prune(folder: Path, top: Path) -> None:
    """Remove ``folder`` and the folders above it up to ``top`` while they are empty."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another model's download), or gone
        folder = folder.parent


@contextlib.contextmanager
def _open_zip(archive: Path):
    """The zip, its ``.tflite`` members by lower-case file name, and its LICENSE member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _zip_files(zf, archive)  # refuses absolute, '..' and link members
            members: dict[str, list[tuple[PurePosixPath, zipfile.ZipInfo]]] = {}
            for path, info in files.items():
                if path.suffix.lower() == ".tflite":
                    members.setdefault(path.name.lower(), []).append((path, info))
            licences = sorted(
                (len(p.parts), p, i) for p, i in files.items() if p.name.upper() == "LICENSE"
            )
            yield zf, members, (licences[0][2] if licences else None)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name} is not a valid zip ({exc})") from exc


def _install_member(
    ctx: _Context,
    model: PublishedModel,
    zf: zipfile.ZipFile,
    members: dict[str, list[tuple[PurePosixPath, zipfile.ZipInfo]]],
    licence: zipfile.ZipInfo | None,
    archive: Path,
) -> InstallResult:
    assert model.member is not None
    found = members.get(model.member.lower(), [])
    if len(found) != 1:
        what = "no" if not found else "several"
        raise CheckpointError(f"{archive.name} holds {what} {model.member}")
    path, info = found[0]
    where = f"{archive.name}:{path}"
    data = read_zip_member(zf, info, TFLITE_MAX_BYTES, where)
    check_tflite(data, where)
    staging = ctx.library.new_staging(model.name)
    try:
        _write(staging / f"{model.name}.tflite", data, ctx.library.root)
        if licence is not None:
            text = read_zip_member(zf, licence, _LICENSE_MAX_BYTES, f"{archive.name}:LICENSE")
            _write(staging / "LICENSE", text, ctx.library.root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    source = f"{model.url(ctx.origin)}#{urllib.parse.quote(str(path))}"
    return _install(ctx, model, staging, source, [], None)


def _write(path: Path, data: bytes, root: Path) -> None:
    try:
        with open(path, "xb") as f:
            f.write(data)
    except OSError as exc:
        raise library_write_error(exc, root) from exc


# ------------------------------------------------------------------ the entry point


def install_published(
    models: Iterable[PublishedModel],
    library: Library,
    fetcher: Fetcher,
    origin: str,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> list[InstallResult]:
    """Install each of ``models`` from ``origin``; one result per model, in order.

    A model already installed from its published source is left alone (``present``)
    unless ``force``. A model that fails does not stop the others, except when the origin
    is unreachable: the rest then fail with the same error without trying.
    """
    ctx = _Context(library, fetcher, origin, reporter or Reporter(), force)
    models = list(models)
    results: dict[str, InstallResult] = {}
    with library.locked(lambda: ctx.reporter.note("waiting for another ddsp-pd models ...")):
        library.clean_staging()
        manifest = library.read_manifest()
        todo = []
        for model in models:
            entry = manifest.get(model.name)
            if not force and is_published_install(entry, model) and library.find(model.name):
                results[model.name] = InstallResult(
                    model.name, "present", library.model_path(model.name), entry
                )
                continue
            try:
                library.check_new_name(model.name, replace=force)
            except DdspPdError as exc:
                results[model.name] = InstallResult(model.name, "failed", error=exc)
                continue
            todo.append(model)
        unreachable: DdspPdError | None = None
        for model in [m for m in todo if m.kind == KIND_DDSP]:
            if unreachable is not None:
                results[model.name] = InstallResult(model.name, "failed", error=unreachable)
                continue
            try:
                results[model.name] = _install_checkpoint(ctx, model)
            except DdspPdError as exc:
                results[model.name] = InstallResult(model.name, "failed", error=exc)
                if isinstance(exc, DownloadError) and exc.unreachable:
                    unreachable = exc
        vst = [m for m in todo if m.kind == KIND_VST]
        if vst and unreachable is not None:
            for m in vst:
                results[m.name] = InstallResult(m.name, "failed", error=unreachable)
        elif vst:
            try:
                results.update((r.name, r) for r in _install_vst(ctx, vst))
            except DdspPdError as exc:
                results.update((m.name, InstallResult(m.name, "failed", error=exc)) for m in vst)
    return [results[m.name] for m in models]
