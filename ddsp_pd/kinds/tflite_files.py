"""Find a DDSP-VST ``.tflite`` model and the files that go with it, and read them.

A model is given as the ``.tflite`` itself, a folder, or a ``.zip``; a folder or a zip
must hold exactly one ``.tflite`` (a folder is searched two levels deep, which covers the
folder ddsp_export writes, ``NAME/tflite/NAME.tflite``, and its parent). Beside the model
may be ``metadata.json`` and ``reverb_ir_<rate>_hz.wav``: they are looked for in the
model's own folder and then in each folder above it up to the folder or zip given (for a
``.tflite`` given directly, its folder); when the last folder searched on disk is
ddsp_export's ``tflite/``, also in the one above it, where ddsp_export puts them.

Everything is read into memory with a size limit, never extracted: a zip is untrusted
input, so unsafe member names and links are refused (the checks of
:mod:`ddsp_pd.checkpoint`) and every read is counted as it streams. The ``.tflite`` is a
zip too (ddsp_export packs ``metadata.json`` into it); that one is read the same way.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ddsp_pd.checkpoint import _CKPT_INDEX, _zip_files
from ddsp_pd.errors import CheckpointError
from ddsp_pd.kinds.vst_metadata import METADATA_MAX_BYTES, METADATA_NAME

__all__ = [
    "FLATBUFFER_ID",
    "REVERB_IR_PATTERN",
    "TFLITE_MAX_BYTES",
    "TfliteFiles",
    "has_flatbuffer_id",
    "looks_like_tflite",
    "read_tflite_files",
]

TFLITE_SUFFIX = ".tflite"
#: The identifier a TFLite flatbuffer carries at bytes 4-8.
FLATBUFFER_ID = b"TFL3"
#: The plugin's models are 7.5 MB; anything past this is not one.
TFLITE_MAX_BYTES = 256 << 20
#: A reverb IR of a few seconds is ~100 kB; this allows minutes at any rate.
WAV_MAX_BYTES = 64 << 20
REVERB_IR_PATTERN = re.compile(r"^reverb_ir_(\d+)_hz\.wav$", re.IGNORECASE)
_FOLDER_DEPTH = 2
_FOLDER_MAX_ENTRIES = 10000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TfliteFiles:
    """The bytes of one model and of the companion files found for it.

    ``location`` names the ``.tflite`` for messages (a path, or ``archive.zip:member``);
    ``companions`` maps a file name (``metadata.json``, ``reverb_ir_16000_hz.wav``) to its
    bytes and ``companion_locations`` to where it was found. ``embedded_metadata`` is the
    ``metadata.json`` packed inside the ``.tflite``, if any.
    """

    path: Path
    location: str
    name: str
    model: bytes = field(repr=False)
    embedded_metadata: bytes | None = field(default=None, repr=False)
    companions: dict[str, bytes] = field(default_factory=dict, repr=False)
    companion_locations: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes in the ``.tflite``."""
        return len(self.model)


def has_flatbuffer_id(head: bytes) -> bool:
    """Whether ``head`` (the first 8 or more bytes of a file) starts a TFLite flatbuffer."""
    return len(head) >= 8 and head[4:8] == FLATBUFFER_ID


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _is_companion(name: str) -> bool:
    return name == METADATA_NAME or REVERB_IR_PATTERN.match(name) is not None


def _read_limited(stream: io.BufferedIOBase, limit: int, what: str) -> bytes:
    """All of ``stream``, refusing more than ``limit`` bytes (counted, not trusted)."""
    parts, total = [], 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise CheckpointError(f"{what} is over the {limit:,} bytes allowed")
        parts.append(chunk)


def _read_file(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{path} is {size:,} bytes, over the {limit:,} allowed")
        with open(path, "rb") as f:
            return _read_limited(f, limit, str(path))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _limit(name: str) -> int:
    return METADATA_MAX_BYTES if name == METADATA_NAME else WAV_MAX_BYTES


# ------------------------------------------------------------------ inside a .tflite


def embedded_metadata(model: bytes, where: str) -> bytes | None:
    """The ``metadata.json`` packed in a ``.tflite`` (its appended zip), or None.

    A model without an appended zip, or a zip without that member, has none. A member that
    cannot be read is an error: the file is damaged.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(model))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    try:
        with zf:
            files = _zip_files(zf, Path(where))
            info = files.get(PurePosixPath(METADATA_NAME))
            if info is None:
                return None
            if info.file_size > METADATA_MAX_BYTES:
                raise CheckpointError(f"{where}: packed metadata.json is too large")
            with zf.open(info) as src:
                return _read_limited(src, METADATA_MAX_BYTES, f"{where}: packed metadata.json")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError,
            NotImplementedError, zipfile.LargeZipFile) as exc:  # fmt: skip
        raise CheckpointError(f"{where}: cannot read its packed metadata.json: {exc}") from exc


# ------------------------------------------------------------------ a zip of a model


def _read_zip(archive: Path) -> TfliteFiles:
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _zip_files(zf, archive)
            models = sorted(p for p in files if p.suffix.lower() == TFLITE_SUFFIX)
            if not models:
                raise CheckpointError(f"zip {archive.name} holds no .tflite model")
            if len(models) > 1:
                names = ", ".join(str(p) for p in models)
                raise CheckpointError(f"zip {archive.name} holds several .tflite models: {names}")
            member = models[0]
            location = f"{archive.name}:{member}"
            info = files[member]
            if info.file_size > TFLITE_MAX_BYTES:
                raise CheckpointError(
                    f"{location} is {info.file_size:,} bytes, over the {TFLITE_MAX_BYTES:,} allowed"
                )
            with zf.open(info) as src:
                model = _read_limited(src, TFLITE_MAX_BYTES, location)
            companions: dict[str, bytes] = {}
            where: dict[str, str] = {}
            for folder in [member.parent, *member.parent.parents]:
                for path, entry in files.items():
                    name = path.name
                    if path.parent != folder or name in companions or not _is_companion(name):
                        continue
                    if entry.file_size > _limit(name):
                        raise CheckpointError(f"{archive.name}:{path} is too large")
                    with zf.open(entry) as src:
                        companions[name] = _read_limited(
                            src, _limit(name), f"{archive.name}:{path}"
                        )
                    where[name] = f"{archive.name}:{path}"
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"not a valid zip file ({archive.name}): {exc}") from exc
    except (OSError, EOFError, zlib.error, zipfile.LargeZipFile, RuntimeError,
            NotImplementedError) as exc:  # fmt: skip
        raise CheckpointError(f"cannot read {archive.name}: {exc}") from exc
    return TfliteFiles(
        archive, location, member.stem, model, embedded_metadata(model, location), companions,
        where,
    )  # fmt: skip


# ------------------------------------------------------------------ a folder or a file


def _walk(folder: Path) -> Iterator[Path]:
    """Files of ``folder`` and of its subfolders down to :data:`_FOLDER_DEPTH`, bounded."""
    level, seen = [folder], 0
    for _ in range(_FOLDER_DEPTH + 1):
        below = []
        for directory in level:
            try:
                entries = sorted(directory.iterdir())
            except OSError:
                continue
            for entry in entries:
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


def _companions_on_disk(folders: list[Path]) -> tuple[dict[str, bytes], dict[str, str]]:
    companions: dict[str, bytes] = {}
    where: dict[str, str] = {}
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name in companions or not _is_companion(entry.name) or not entry.is_file():
                continue
            companions[entry.name] = _read_file(entry, _limit(entry.name))
            where[entry.name] = str(entry)
    return companions, where


def _read_model_file(given: Path, model: Path, folders: list[Path]) -> TfliteFiles:
    data = _read_file(model, TFLITE_MAX_BYTES)
    companions, where = _companions_on_disk(folders)
    return TfliteFiles(
        given, str(model), model.stem, data, embedded_metadata(data, str(model)), companions,
        where,
    )  # fmt: skip


def _with_export_parent(folders: list[Path]) -> list[Path]:
    """``folders``, plus the one above the last when that is ddsp_export's ``tflite/``."""
    if folders[-1].name == "tflite":
        return [*folders, folders[-1].parent]
    return folders


def _read_folder(folder: Path) -> TfliteFiles:
    models = [p for p in _walk(folder) if p.suffix.lower() == TFLITE_SUFFIX]
    if not models:
        raise CheckpointError(f"no .tflite model in folder {folder}")
    if len(models) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in models)
        raise CheckpointError(f"folder {folder} holds several .tflite models: {names}")
    model = models[0]
    folders = [model.parent]
    while folders[-1] != folder:
        folders.append(folders[-1].parent)
    return _read_model_file(folder, model, _with_export_parent(folders))


def read_tflite_files(path: str | Path) -> TfliteFiles:
    """Read the model at ``path`` (a ``.tflite``, or a folder or zip holding one).

    Raises :class:`CheckpointError` with one line naming the problem: nothing there, no
    model or several, a file that is neither a TFLite flatbuffer nor a zip, an unsafe or
    damaged zip, a file over its size limit.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"model not found: {path}")
    if path.is_dir():
        return _read_folder(path)
    head = _head(path)
    if has_flatbuffer_id(head):
        return _read_model_file(path, path, _with_export_parent([path.parent]))
    if path.suffix.lower() == TFLITE_SUFFIX:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} is not a TFLite model: no TFLite flatbuffer identifier ({size:,} bytes)"
        )
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    raise CheckpointError(f"{path} is neither a .tflite model nor a folder or zip holding one")


def looks_like_tflite(path: str | Path) -> bool:
    """A cheap guess at whether ``path`` is meant as a ``.tflite`` model (for routing).

    True for a file with the TFLite identifier or the ``.tflite`` suffix, and for a folder
    or zip with a ``.tflite`` in it and no ddsp checkpoint index (``ckpt-N.index``). Nothing
    is validated; :func:`read_tflite_files` does that.
    """
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            names = [p.name for p in _walk(path)]
        elif path.is_file():
            if path.suffix.lower() == TFLITE_SUFFIX or has_flatbuffer_id(_head(path)):
                return True
            if not zipfile.is_zipfile(path):
                return False
            with zipfile.ZipFile(path) as zf:
                names = [PurePosixPath(n).name for n in zf.namelist()]
        else:
            return False
    except (CheckpointError, OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
    has_model = any(n.lower().endswith(TFLITE_SUFFIX) for n in names)
    return has_model and not any(_CKPT_INDEX.match(n) for n in names)
