"""``ddsp-pd models import``: a model the user has, copied into the library under a name.

What can be imported:

- a ddsp checkpoint folder (or one of its ``ckpt-N.index`` files): the chosen ``ckpt-N``
  (the one the ``checkpoint`` file names, else the highest N), its data shards,
  ``operative_config-0.gin``, ``dataset_statistics.pkl`` and small notes beside them
  (LICENSE, README, MODEL_CARD); never the other ckpts or optimizer-only files;
- a ``.zip`` of a checkpoint folder: extracted as :mod:`ddsp_pd.checkpoint` does (only what
  the chosen ckpt needs, names checked, every byte counted);
- a DDSP-VST ``.tflite``, or a folder or zip holding one or several: each ``.tflite`` is a
  model of its own, with the ``metadata.json`` and ``reverb_ir_<rate>_hz.wav`` found in its
  folder or the folders above it (ddsp_export's ``NAME/tflite/NAME.tflite`` layout). The
  DDSP-VST release zip imports as the same ``vst_<instrument>`` models its download gives.

Everything is copied (the original stays where it is), checked in a staging folder, then
installed atomically by :class:`ddsp_pd.library.store.Library`.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ddsp_pd.catalog import SHIPPED_DIR
from ddsp_pd.checkpoint import GIN_NAME, STATISTICS_NAME, _extract_checkpoint, _locate, _zip_files
from ddsp_pd.errors import CheckpointError, DdspPdError
from ddsp_pd.library.checks import (
    FLATBUFFER_ID,
    METADATA_NAME,
    TFLITE_MAX_BYTES,
    check_checkpoint_folder,
    check_tflite,
    read_zip_member,
)
from ddsp_pd.library.download import library_write_error
from ddsp_pd.library.install import InstallResult
from ddsp_pd.library.published import KIND_DDSP, KIND_VST, VST_INSTRUMENTS
from ddsp_pd.library.store import Library, check_name

__all__ = ["import_model"]

_NOTE_PREFIXES = ("LICENSE", "LICENCE", "README", "MODEL_CARD", "NOTICE")
_NOTE_MAX_BYTES = 1 << 20
_METADATA_MAX_BYTES = 1 << 20
_WAV_MAX_BYTES = 64 << 20
_FOLDER_DEPTH = 2
_FOLDER_MAX_ENTRIES = 10000
_VST_NAMES = {i.lower() for i in VST_INSTRUMENTS}


@dataclass(frozen=True)
class _Tflite:
    """One .tflite to import: its bytes, where it came from, companions by file name."""

    stem: str
    data: bytes
    where: str
    companions: dict[str, bytes]
    source: str


def _is_companion(name: str) -> bool:
    lower = name.lower()
    return lower == METADATA_NAME or (lower.startswith("reverb_ir_") and lower.endswith("_hz.wav"))


def _companion_limit(name: str) -> int:
    return _METADATA_MAX_BYTES if name.lower() == METADATA_NAME else _WAV_MAX_BYTES


def _default_tflite_name(stem: str, release: bool) -> str:
    # The DDSP-VST release's instruments keep the names their download gives.
    return f"vst_{stem.lower()}" if release else stem


# ------------------------------------------------------------------ reading what is given


def _read_local(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{path} is {size:,} bytes, over the {limit:,} allowed")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise CheckpointError(f"{path} is over the {limit:,} bytes allowed")
    return data


def _walk(folder: Path) -> Iterator[Path]:
    """Files of ``folder`` down to two folders below, dot-entries skipped, bounded."""
    level, seen = [folder], 0
    for _ in range(_FOLDER_DEPTH + 1):
        below = []
        for directory in level:
            for entry in sorted(directory.iterdir()):
                seen += 1
                if seen > _FOLDER_MAX_ENTRIES:
                    raise CheckpointError(f"folder {folder} has too many entries to search")
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    below.append(entry)
                elif entry.is_file():
                    yield entry
        level = below


def _companions_on_disk(model: Path, top: Path) -> dict[str, bytes]:
    """Companion files in the model's folder, then each folder above it up to ``top``, then
    (ddsp_export's layout) the one above a last folder named ``tflite``."""
    folders = [model.parent]
    while folders[-1] != top and top in folders[-1].parents:
        folders.append(folders[-1].parent)
    if folders[-1].name == "tflite":
        folders.append(folders[-1].parent)
    found: dict[str, bytes] = {}
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and _is_companion(entry.name) and entry.name not in found:
                found[entry.name] = _read_local(entry, _companion_limit(entry.name))
    return found


def _tflites_in_folder(folder: Path) -> list[_Tflite]:
    models = [p for p in _walk(folder) if p.suffix.lower() == ".tflite"]
    found = []
    for p in models:
        data = _read_local(p, TFLITE_MAX_BYTES)
        found.append(
            _Tflite(p.stem, data, str(p), _companions_on_disk(p, folder), str(p.resolve()))
        )
    return found


def _tflites_in_zip(archive: Path) -> tuple[list[_Tflite], bytes | None]:
    """Every .tflite of a zip with its companions, and the zip's LICENSE (if any)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _zip_files(zf, archive)
            models = sorted(p for p in files if p.suffix.lower() == ".tflite")
            out = []
            for member in models:
                companions = {}
                for folder in [member.parent, *member.parent.parents]:
                    for path, info in sorted(files.items()):
                        name = path.name
                        if path.parent != folder or not _is_companion(name) or name in companions:
                            continue
                        limit = _companion_limit(name)
                        companions[name] = read_zip_member(
                            zf, info, limit, f"{archive.name}:{path}"
                        )
                where = f"{archive.name}:{member}"
                data = read_zip_member(zf, files[member], TFLITE_MAX_BYTES, where)
                source = f"{archive.resolve()}#{member}"
                out.append(_Tflite(member.stem, data, where, companions, source))
            notes = sorted((len(p.parts), p) for p in files if p.name.upper() == "LICENSE")
            licence = None
            if notes:
                path = notes[0][1]
                where = f"{archive.name}:{path}"
                licence = read_zip_member(zf, files[path], _NOTE_MAX_BYTES, where)
            return out, licence
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"not a valid zip file ({archive.name}): {exc}") from exc


def _zip_has_checkpoint(archive: Path) -> bool:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [PurePosixPath(n).name for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"not a valid zip file ({archive.name}): {exc}") from exc
    return any(n.startswith("ckpt") and n.endswith(".index") for n in names) or GIN_NAME in names


def _is_tflite_file(path: Path) -> bool:
    if path.suffix.lower() == ".tflite":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == FLATBUFFER_ID
    except OSError:
        return False


# ------------------------------------------------------------------ staging


def _copy(src: Path, dest: Path, root: Path) -> None:
    try:
        shutil.copyfile(src, dest)
    except OSError as exc:
        if not src.exists():
            raise CheckpointError(f"{src} is missing") from exc
        raise library_write_error(exc, root) from exc


def _write(dest: Path, data: bytes, root: Path) -> None:
    try:
        dest.write_bytes(data)
    except OSError as exc:
        raise library_write_error(exc, root) from exc


def _stage_checkpoint_folder(library: Library, path: Path, name: str) -> Path:
    from ddsp_pd.tensor_bundle import read_index

    loc = _locate(path, with_data=False)  # a folder: nothing is extracted
    directory = loc.directory
    index = read_index(directory / loc.name)
    wanted = [directory / f"{loc.name}.index"]
    wanted += [index.data_path(shard) for shard in range(index.num_shards)]
    wanted += [directory / n for n in (GIN_NAME, STATISTICS_NAME) if (directory / n).is_file()]
    wanted += [
        p for p in sorted(directory.iterdir())
        if p.is_file() and p.name.upper().startswith(_NOTE_PREFIXES)
        and p.stat().st_size <= _NOTE_MAX_BYTES
    ]  # fmt: skip
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        raise CheckpointError(f"{directory} lacks {', '.join(missing)}")
    library.ensure_space(sum(p.stat().st_size for p in wanted), name)
    staging = library.new_staging(name)
    try:
        for src in wanted:
            _copy(src, staging / src.name, library.root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _stage_checkpoint_zip(library: Library, archive: Path, name: str) -> Path:
    library.ensure_space(archive.stat().st_size, name)
    staging = library.new_staging(name)
    try:
        _extract_checkpoint(archive, staging, with_data=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _stage_tflite(library: Library, model: _Tflite, name: str, licence: bytes | None) -> Path:
    check_tflite(model.data, model.where, metadata_beside=METADATA_NAME in model.companions)
    library.ensure_space(len(model.data) + sum(map(len, model.companions.values())), name)
    staging = library.new_staging(name)
    try:
        _write(staging / f"{name}.tflite", model.data, library.root)
        for companion, data in model.companions.items():
            _write(staging / companion, data, library.root)
        if licence is not None:
            _write(staging / "LICENSE", licence, library.root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


# ------------------------------------------------------------------ the entry point


def _install(
    library: Library, name: str, staging: Path, kind: str, source: str, force: bool
) -> InstallResult:
    try:
        warnings = check_checkpoint_folder(staging) if kind == KIND_DDSP else []
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replacing = library.existing(name) is not None
    entry = library.install(name, staging, kind, source, replace=force)
    return InstallResult(
        name, "replaced" if replacing else "installed", library.model_path(name), entry, warnings
    )


def import_model(
    library: Library, path: str | Path, *, name: str | None = None, force: bool = False
) -> list[InstallResult]:
    """Copy the model(s) at ``path`` into the library; one result per model installed.

    ``name`` names the model (default: the folder's or file's name); a folder or zip with
    several ``.tflite`` models imports each under its own name and takes no ``name``.
    Raises :class:`CheckpointError` (or ``OutputError`` for the library) when nothing can be
    imported; with several models, one that fails is reported in its result.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"nothing to import: {path} does not exist")
    resolved = path.resolve()
    for folder in (library.root.resolve(), SHIPPED_DIR.resolve()):
        if resolved == folder or folder in resolved.parents:
            raise CheckpointError(f"{path} is already in {folder}: nothing to import")
    if name is not None:
        check_name(name)
    with library.locked():
        library.clean_staging()
        if path.is_dir():
            if any(path.glob("*.index")):
                model_name = check_name(name or path.name)
                library.check_new_name(model_name, replace=force)
                staging = _stage_checkpoint_folder(library, path, model_name)
                return [_install(library, model_name, staging, KIND_DDSP, str(resolved), force)]
            tflites = _tflites_in_folder(path)
            if not tflites:
                raise CheckpointError(f"no ddsp checkpoint (ckpt-N.index) or .tflite in {path}")
            return _import_tflites(library, tflites, None, name, path, resolved, force)
        if zipfile.is_zipfile(path) and path.suffix.lower() != ".tflite":
            if _zip_has_checkpoint(path):
                model_name = check_name(name or path.stem)
                library.check_new_name(model_name, replace=force)
                staging = _stage_checkpoint_zip(library, path, model_name)
                return [_install(library, model_name, staging, KIND_DDSP, str(resolved), force)]
            tflites, licence = _tflites_in_zip(path)
            if not tflites:
                raise CheckpointError(f"zip {path.name} holds no ddsp checkpoint and no .tflite")
            return _import_tflites(library, tflites, licence, name, path, resolved, force)
        if _is_tflite_file(path):
            model = _Tflite(
                path.stem, _read_local(path, TFLITE_MAX_BYTES), str(path),
                _companions_on_disk(path, path.parent), str(resolved),
            )  # fmt: skip
            return _import_tflites(library, [model], None, name, path, resolved, force)
        if path.name.endswith(".index") or ".data-" in path.name:
            model_name = check_name(name or path.parent.name)
            library.check_new_name(model_name, replace=force)
            staging = _stage_checkpoint_folder(library, path, model_name)
            return [_install(library, model_name, staging, KIND_DDSP, str(resolved), force)]
        raise CheckpointError(
            f"{path} is neither a ddsp checkpoint (folder, .zip, ckpt-N.index) nor a DDSP-VST "
            ".tflite (or a folder or zip of them)"
        )


def _import_tflites(
    library: Library,
    tflites: list[_Tflite],
    licence: bytes | None,
    name: str | None,
    given: Path,
    resolved: Path,
    force: bool,
) -> list[InstallResult]:
    if len(tflites) > 1 and name is not None:
        raise CheckpointError(
            f"{given} holds {len(tflites)} .tflite models: each is imported under its own "
            "name, so --name cannot be given"
        )
    release = len(tflites) > 1 and all(t.stem.lower() in _VST_NAMES for t in tflites)
    results = []
    for model in tflites:
        default = given.stem if len(tflites) == 1 and given.is_file() else model.stem
        model_name = name or _default_tflite_name(default, release)
        try:
            check_name(model_name)
            library.check_new_name(model_name, replace=force)
            staging = _stage_tflite(library, model, model_name, licence)
            results.append(_install(library, model_name, staging, KIND_VST, model.source, force))
        except DdspPdError as exc:
            if len(tflites) == 1:
                raise
            results.append(InstallResult(model_name, "failed", error=exc))
    return results
